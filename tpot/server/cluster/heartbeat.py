"""A node's heartbeat: how the cluster knows it is alive, and how it learns about the cluster.

Every `interval` seconds the node writes its entry (tpot.server.cluster.redis_store.BEAT),
alive for `ttl` seconds.  When that entry did not survive (Redis restarted, or this node
could not reach it for longer than the ttl), the node writes its open tunnels back
(`sync`) and closes those whose names went to others meanwhile.  Losing and finding Redis
again is said once each in the log.  What a beat learns (nodes alive, tunnels in the
cluster) is what /api/status and /metrics report, without asking Redis per request.
"""

from twisted.application.service import Service
from twisted.internet import task
from twisted.logger import Logger
from zope.interface import implementer

from tpot.server.cluster.hop import signed_address
from tpot.server.cluster.view import IClusterView

# A node killed outright routes nowhere after at most TTL seconds; a beat every
# TTL / BEATS_PER_TTL lets a few beats go missing before that happens to a live one.
DEFAULT_TTL = 10.0
BEATS_PER_TTL = 4


@implementer(IClusterView)
class Heartbeat(Service):
    log = Logger()

    def __init__(self, store, table, secret, advertise, clock, ttl=DEFAULT_TTL, redis_url=""):
        self.store = store
        self.table = table
        self.node_id = store.node
        self.address = signed_address(secret, store.node, advertise)
        self.advertise = advertise
        self.clock = clock
        self.ttl = ttl
        self.redis_url = redis_url
        self.nodes = 0
        self.tunnels = 0
        self._up = None  # None until the first beat says
        self._beating = False
        self._loop = None

    # IClusterView.

    def registry_up(self):
        return bool(self._up) and self.store.available()

    def nodes_alive(self):
        return self.nodes

    def cluster_tunnels(self):
        return self.tunnels

    # The service.

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.beat)
        self._loop.clock = self.clock
        self._loop.start(self.ttl / BEATS_PER_TTL, now=True)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def beat(self):
        """One beat (the loop calls it); a Deferred, or None while the last is still out."""
        if self._beating:
            return None
        self._beating = True
        d = self.store.beat(self.address, self.ttl)
        d.addCallback(self._beaten)
        d.addErrback(self._lost)
        d.addBoth(self._done)
        return d

    def _beaten(self, beat):
        self.nodes, self.tunnels = beat.nodes, beat.tunnels
        # Also on the first beat, even with the entry alive: what an earlier process of this
        # node id left (a worker or a pod restarted within the ttl) is reserved for its clients.
        if beat.was_alive and self._up is not None:
            return self._found()
        tunnels = self.table.tunnels()
        d = self.store.sync([(tunnel.claim, tunnel.route_info()) for tunnel in tunnels], first=self._up is None)
        return d.addCallback(self._synced, tunnels)

    def _synced(self, lost, tunnels):
        for tunnel in tunnels:
            if tunnel.claim.name in lost:
                tunnel.name_lost()
        self._found(f"{len(tunnels) - len(lost)} tunnels of this node written back, {len(lost)} lost")

    def _found(self, written_back="nothing lost"):
        if self._up is None:
            self.log.info("node {node} joined the cluster ({nodes} nodes alive), reached at {address}",
                          node=self.node_id, nodes=self.nodes, address=self.advertise)
        elif self._up is False:
            self.log.info("Redis at {url} is back: {what}", url=self.redis_url, what=written_back)
        self._up = True

    def _lost(self, failure):
        if self._up is not False:
            self.log.warn("Redis at {url} is unreachable ({why}): tunnels of this node keep working,"
                          " new tunnels get 503 until Redis returns", url=self.redis_url, why=failure.getErrorMessage())
        self._up = False

    def _done(self, result):
        self._beating = False
