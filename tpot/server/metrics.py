"""Counters the server keeps, and their Prometheus rendering for /metrics.

The hot paths only add to plain integers on `Stats`; prometheus-client sees them through
a collector at scrape time, so counting costs nothing measurable per message.  Counts
only: no tunnel names, no addresses.
"""

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Stats:
    def __init__(self):
        self.conversations_total = 0
        self.bytes_upstream = 0  # visitor -> tunnel client
        self.bytes_downstream = 0  # tunnel client -> visitor
        self.auth_failures = 0
        self.http_errors = Counter()
        # Visitor connections handed between nodes (tpot.server.cluster.peers); of them, those
        # handed whole between the workers of one machine (tpot.server.cluster.siblings).
        self.forwarded_in = 0
        self.forwarded_out = 0
        self.workers_in = 0
        self.workers_out = 0
        # Links between nodes (tpot.server.cluster.links), each carrying many of those
        # visitor connections: accepted from others, opened to others.
        self.links_in = 0
        self.links_out = 0

    def count_refusal(self, status, tunnel_auth=True):
        """An error response; a 401 is a tunnel auth failure unless `tunnel_auth` is false."""
        self.http_errors[status] += 1
        if status == 401 and tunnel_auth:
            self.auth_failures += 1


class _Collector:
    def __init__(self, stats, table, cluster):
        self.stats = stats
        self.table = table
        self.cluster = cluster

    def collect(self):
        stats = self.stats
        yield GaugeMetricFamily("tpot_tunnels_active", "Tunnels open now.", value=self.table.active_tunnels())
        yield GaugeMetricFamily(
            "tpot_conversations_active", "Visitor connections relayed now.",
            value=self.table.active_conversations(),
        )
        yield CounterMetricFamily(
            "tpot_conversations", "Visitor connections relayed since start.", value=stats.conversations_total
        )
        traffic = CounterMetricFamily(
            "tpot_bytes", "Bytes relayed, by direction (upstream: visitor to client).", labels=["direction"]
        )
        traffic.add_metric(["upstream"], stats.bytes_upstream)
        traffic.add_metric(["downstream"], stats.bytes_downstream)
        yield traffic
        yield CounterMetricFamily(
            "tpot_auth_failures", "Tunnel requests refused for bad credentials.", value=stats.auth_failures
        )
        errors = CounterMetricFamily("tpot_http_errors", "Error responses sent, by status.", labels=["code"])
        for code, count in sorted(stats.http_errors.items()):
            errors.add_metric([str(code)], count)
        yield errors
        yield from self._cluster()

    def _cluster(self):
        cluster = self.cluster
        yield GaugeMetricFamily("tpot_cluster_nodes", "Nodes of the cluster alive, this one included.",
                                value=cluster.nodes_alive())
        yield GaugeMetricFamily("tpot_registry_up", "1 while the tunnel registry (Redis) can be reached.",
                                value=int(cluster.registry_up()))
        forwarded = CounterMetricFamily(
            "tpot_forwarded_conversations",
            "Visitor connections handed between nodes: in from others, out to others.", labels=["direction"],
        )
        forwarded.add_metric(["in"], self.stats.forwarded_in)
        forwarded.add_metric(["out"], self.stats.forwarded_out)
        yield forwarded
        links = CounterMetricFamily(
            "tpot_peer_links", "Links between nodes, each carrying many forwarded visitor connections:"
            " in from others, out to others.", labels=["direction"],
        )
        links.add_metric(["in"], self.stats.links_in)
        links.add_metric(["out"], self.stats.links_out)
        yield links


def render(stats, table, cluster):
    """The exposition-format text for one scrape; `cluster` is an IClusterView."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(_Collector(stats, table, cluster))
    return generate_latest(collectors)
