"""What /api/status and /metrics say about the cluster, whether or not there is one."""

from zope.interface import Attribute, Interface, implementer


class IClusterView(Interface):
    node_id = Attribute("This node's id, or None for a server of one process.")

    def registry_up():
        """Whether the registry (Redis, in a cluster) can be reached."""

    def nodes_alive():
        """How many nodes the cluster has now, this one included."""

    def cluster_tunnels():
        """How many tunnels are open on all nodes together."""


@implementer(IClusterView)
class Standalone:
    """A server of one process, with the in-memory registry: it is its own cluster."""

    node_id = None

    def __init__(self, table):
        self.table = table

    def registry_up(self):
        return True

    def nodes_alive(self):
        return 1

    def cluster_tunnels(self):
        return self.table.active_tunnels()
