"""The service that makes a server one node of a cluster: Redis, then the heartbeat.

At start-up Redis is tried once without reconnecting, so that a wrong URL, password or
host stops the server with one sentence; then the connection the node keeps (which
reconnects, with backoff, for as long as the node runs) is handed to the name store and
the heartbeat starts.  At shutdown, after the drain, the node says it is gone (its
entry expires at once, so its reserved names wait for their clients elsewhere).
"""

import os

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from tpot.server.cluster.redis_store import connect_redis, redacted_url

# txredisapi waits up to this long between reconnection attempts (its default is 10 s):
# a node finds Redis again within a few seconds of it coming back.
RECONNECT_MAX_DELAY = 3.0


class ClusterNode(MultiService):
    log = Logger()

    def __init__(self, store, heartbeat, url, reactor):
        super().__init__()
        self.store = store
        self.heartbeat = heartbeat
        self.url = url
        self.reactor = reactor
        self.ready = None

    def startService(self):
        super().startService()
        self.ready = self._connect()
        self.ready.addErrback(self._fatal)

    @defer.inlineCallbacks
    def stopService(self):
        yield super().stopService()
        if self.heartbeat.running:
            yield self.heartbeat.stopService()
            try:
                yield self.store.beat(self.heartbeat.address, 0)
            except Exception as error:
                self.log.info("could not tell Redis this node left ({error})", error=error)
        if self.store.redis is not None:
            yield self.store.redis.disconnect()

    @defer.inlineCallbacks
    def _connect(self):
        probe = yield connect_redis(self.url, reconnect=False)
        yield probe.disconnect()
        connection = yield connect_redis(self.url)
        # Only the factory holds the delay between attempts.
        connection._factory.maxDelay = RECONNECT_MAX_DELAY
        self.store.redis = connection
        if self.running:
            self.heartbeat.startService()

    def _fatal(self, failure):
        reason = failure.getErrorMessage().removeprefix("Redis error: ").rstrip(".")
        self.log.critical("tpot: cannot use Redis at {url}: {reason}; check --redis (or REDIS_URL) and that"
                          " Redis runs there.", url=redacted_url(self.url), reason=reason)
        # twistd has no exit status of its own for a service that failed after start-up.
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self.reactor.stop()
