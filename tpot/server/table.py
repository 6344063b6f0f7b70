"""The node-local table: the live tunnels of this node, by lease.

The name store (tpot.server.store) holds data a cluster can share; the tunnel objects
themselves exist only here, so the counts /api/status and /metrics report, and the
drain's closing of every tunnel (tpot.server.drain), are this node's.
"""

from zope.interface import Attribute, Interface, implementer

from tpot.server.store import LocalRoute


class ILiveTunnel(Interface):
    """What the table needs of a tunnel open on this node."""

    conversations = Attribute("The tunnel's open conversations, by id (a sized container).")
    claim = Attribute("The tpot.server.store.Claim the tunnel holds its name by.")

    def route_info():
        """The tpot.server.store.RouteInfo visitors of the tunnel are routed by."""

    def shutdown():
        """Close the tunnel, telling its client the server is restarting."""

    def name_lost():
        """Close the tunnel: its name went to another tunnel while the registry was away."""


class ITunnelCounts(Interface):
    """What /api/status and /metrics report of this node."""

    def active_tunnels():
        """How many tunnels are open on this node."""

    def active_conversations():
        """How many conversations the tunnels of this node have open."""


class ITunnelTable(ITunnelCounts):
    def add(lease, tunnel):
        """Record the ILiveTunnel attached under `lease`."""

    def remove(lease):
        """Forget the tunnel under `lease`, if any."""

    def get(lease):
        """The tunnel attached under `lease` on this node, or None."""

    def routes(name):
        """The LocalRoutes of the tunnels serving `name` on this node (several for members
        of a pool): what visitors of this node still reach while a shared registry is away."""

    def tunnels():
        """The tunnels open on this node."""

    def shutdown_tunnels():
        """Close every tunnel of this node, telling clients the server is restarting."""


@implementer(ITunnelTable)
class TunnelTable:
    def __init__(self):
        self._tunnels = {}
        self._leases = {}  # name -> the leases of its tunnels here, in the order they came

    def add(self, lease, tunnel):
        self._tunnels[lease] = tunnel
        self._leases.setdefault(tunnel.claim.name, {})[lease] = None

    def remove(self, lease):
        tunnel = self._tunnels.pop(lease, None)
        if tunnel is None:
            return
        leases = self._leases[tunnel.claim.name]
        del leases[lease]
        if not leases:
            del self._leases[tunnel.claim.name]

    def get(self, lease):
        return self._tunnels.get(lease)

    def routes(self, name):
        leases = self._leases.get(name, ())
        return tuple(LocalRoute(name, lease, self._tunnels[lease].route_info()) for lease in leases)

    def tunnels(self):
        return list(self._tunnels.values())

    def active_tunnels(self):
        return len(self._tunnels)

    def active_conversations(self):
        return sum(len(tunnel.conversations) for tunnel in self._tunnels.values())

    def shutdown_tunnels(self):
        # A copy: a tunnel that closes at once leaves the table while we go through it.
        for tunnel in list(self._tunnels.values()):
            tunnel.shutdown()
