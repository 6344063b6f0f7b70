"""Graceful shutdown: what happens between SIGTERM and exit.

The listening ports are stopped last.  First the router refuses new tunnels and visitors
(503, and /healthz says 503 so load balancers stop sending), open conversations get up to
`drain_timeout` seconds to finish, then every tunnel is closed with a code that tells our
client the server is restarting, and only then do the ports close.
"""

from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.logger import Logger

POLL = 0.2
CLOSE_WAIT = 2.0


class DrainingListeners(MultiService):
    log = Logger()

    def __init__(self, router, table, clock, drain_timeout, relays=()):
        super().__init__()
        self.router = router
        self.table = table  # the live tunnels of this node
        # What else relays visitors of this node (those handed to other nodes, tpot.server.cluster.peers).
        self.relays = tuple(relays)
        self.clock = clock
        self.drain_timeout = drain_timeout

    @defer.inlineCallbacks
    def stopService(self):
        self.router.draining = True
        self.log.info(
            "draining: {n} conversations, up to {t:.0f} s",
            n=self._conversations(), t=self.drain_timeout,
        )
        yield self._until(lambda: self._conversations() == 0, self.drain_timeout)
        self.table.shutdown_tunnels()
        yield self._until(lambda: self.table.active_tunnels() == 0, CLOSE_WAIT)
        yield super().stopService()
        # Once the reactor stops, twistd kills itself with the signal that stopped it
        # (status 143 for SIGTERM); a drained shutdown is a clean one: exit status 0.
        if getattr(self.clock, "_exitSignal", None) is not None:
            self.clock._exitSignal = None

    def _conversations(self):
        return self.table.active_conversations() + sum(relay.active_conversations() for relay in self.relays)

    @defer.inlineCallbacks
    def _until(self, done, timeout):
        deadline = self.clock.seconds() + timeout
        while not done() and self.clock.seconds() < deadline:
            yield task.deferLater(self.clock, POLL, lambda: None)
