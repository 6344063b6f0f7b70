"""Plain HTTP endpoints of the bare domain besides /create-tpot (status for now)."""

import json

from tpot import __version__
from tpot.head import HeadError


def status(registry, uptime):
    """What /api/status reports: counts only, nothing about who is connected."""
    return {
        "tunnels": registry.active_tunnels(),
        "conversations": registry.active_conversations(),
        "uptime_s": round(uptime, 3),
        "version": __version__,
    }


def json_response(document):
    body = json.dumps(document, sort_keys=True).encode("utf-8") + b"\n"
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def respond(head, registry, uptime):
    """The response for a plain endpoint, or None if `head` is not for one."""
    if head.path != "/api/status":
        return None
    if head.method not in ("GET", "HEAD"):
        raise HeadError(405, "Use GET for /api/status.")
    return json_response(status(registry, uptime))
