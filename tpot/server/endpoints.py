"""Plain HTTP endpoints of the bare domain besides /create-tpot.

`/healthz` for probes, `/metrics` for Prometheus, `/api/status` as JSON, `/` a landing
page.  They exist only on the bare domain: on NAME.DOMAIN every path belongs to the tunnel.
`server` is the router factory: it has table (this node's live tunnels, whose counts are
reported), cluster (a tpot.server.cluster.view.IClusterView), stats, draining, uptime(),
domain and metrics_token.
"""

import hmac
import html
import json

from tpot import __version__
from tpot.http.head import HeadError
from tpot.server import metrics


def response(status, content_type, body, with_body=True):
    """A complete `Connection: close` response; a HEAD response keeps the head only."""
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + (body if with_body else b"")


def status(server):
    """What /api/status reports: counts only, nothing about who is connected."""
    cluster = server.cluster
    return {
        "node": cluster.node_id,
        "nodes": cluster.nodes_alive(),
        "cluster_tunnels": cluster.cluster_tunnels(),
        "registry_up": cluster.registry_up(),
        "tunnels": server.table.active_tunnels(),
        "conversations": server.table.active_conversations(),
        # Visitor connections handed over from other nodes, and to them (a cluster's hops).
        "forwarded": {"in": server.stats.forwarded_in, "out": server.stats.forwarded_out,
                      "workers_in": server.stats.workers_in, "workers_out": server.stats.workers_out,
                      "links_in": server.stats.links_in, "links_out": server.stats.links_out},
        "uptime_s": round(server.uptime(), 3),
        "version": __version__,
        "draining": server.draining,
    }


def _healthz(head, server):
    if server.draining:
        return "503 Service Unavailable", "text/plain; charset=utf-8", b"draining\n"
    return "200 OK", "text/plain; charset=utf-8", b"ok\n"


def _metrics(head, server):
    if server.metrics_token is not None:
        scheme, _, token = (head.header("authorization") or "").partition(" ")
        presented = token.strip().encode("utf-8", "replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, server.metrics_token.encode()):
            raise HeadError(401, "Metrics need Authorization: Bearer TOKEN.", [("WWW-Authenticate", "Bearer")])
    return "200 OK", metrics.CONTENT_TYPE, metrics.render(server.stats, server.table, server.cluster)


def _status(head, server):
    body = json.dumps(status(server), sort_keys=True).encode("utf-8") + b"\n"
    return "200 OK", "application/json", body


def _landing(head, server):
    scheme = "https" if (head.header("x-forwarded-proto") or "").lower() == "https" else "http"
    url = html.escape(f"{scheme}://{head.header('host') or server.domain}")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TPoT tunnel server</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>TPoT tunnel server</h1>
<p>This server exposes services running on people's own machines at
<code>NAME.{html.escape(server.domain)}</code>, through tunnels they open to it.</p>
<p>To expose a local port, for example 8080:</p>
<pre>tpot http 8080 -t {url}</pre>
</body></html>
"""
    return "200 OK", "text/html; charset=utf-8", page.encode("utf-8")


ENDPOINTS = {"/healthz": _healthz, "/metrics": _metrics, "/api/status": _status, "/": _landing}


def respond(head, server):
    """The response for a plain endpoint, or None if `head` is not for one."""
    handler = ENDPOINTS.get(head.path)
    if handler is None:
        return None
    if head.method not in ("GET", "HEAD"):
        raise HeadError(405, f"Use GET for {head.path}.")
    status_line, content_type, body = handler(head, server)
    return response(status_line, content_type, body, with_body=head.method != "HEAD")
