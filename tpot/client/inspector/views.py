"""The inspector's JSON: what the API and the live list say about each exchange.

Pure: exchanges (tpot.client.inspector.capture) in, plain dicts out; the body views come
from tpot.client.inspector.present.
"""

import base64

from tpot.client.inspector.present import curl_command, message_body, present_message, query_parameters

DEFAULT_LIMIT = 100


class FilterError(ValueError):
    """A filter the API cannot apply; the message says what to send instead."""


def summary(exchange):
    response = exchange.response
    return {
        "id": exchange.id,
        "tunnel": exchange.tunnel.name,
        "started": exchange.started,
        "method": exchange.method,
        "path": exchange.path,
        "status": exchange.status,
        "duration": exchange.duration,
        "request_size": exchange.request.body_size,
        "response_size": response.body_size if response is not None and exchange.status is not None else None,
        "visitor": exchange.visitor,
        "replay_of": exchange.replay_of,
        "upgrade": exchange.upgrade,
        "outcome": exchange.outcome,
    }


def detail(exchange):
    """The summary and both messages in full (bytes as base64), with their views."""
    result = summary(exchange)
    result["request"] = _message(exchange.request)
    result["response"] = _message(exchange.response) if exchange.response is not None else None
    result["query"] = query_parameters(exchange.path)
    result["curl"] = curl_command(exchange, exchange.tunnel.public_url or "")
    return result


def _message(message):
    return {
        "raw": _base64(message.raw),
        "body": _base64(message_body(message.raw)),
        "body_size": message.body_size,
        "truncated": message.truncated,
        "display": present_message(message.raw, message.truncated),
    }


def _base64(data):
    return base64.b64encode(data).decode("ascii")


def status_filter(text):
    """A predicate on statuses for `404` or a class such as `4xx` (None: no filter)."""
    if not text:
        return None
    text = text.strip().lower()
    if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
        low = int(text[0]) * 100
        return lambda status: status is not None and low <= status < low + 100
    if len(text) == 3 and text.isascii() and text.isdigit():
        wanted = int(text)
        return lambda status: status == wanted
    raise FilterError(f"status must be a status such as 404 or a class such as 4xx, not {text!r}")


def parse_limit(text):
    if text is None or text == "":
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise FilterError(f"limit must be a whole number of at least 1, not {text!r}")
    return int(text)


def select(exchanges, limit=DEFAULT_LIMIT, status=None, path=None, method=None):
    """The summaries of `exchanges` (newest first) that pass every filter given, at most `limit`."""
    wanted_status = status_filter(status)
    method = method.upper() if method else None
    chosen = []
    for exchange in exchanges:
        if len(chosen) >= limit:
            break
        if wanted_status is not None and not wanted_status(exchange.status):
            continue
        if path and path not in exchange.path:
            continue
        if method and exchange.method.upper() != method:
            continue
        chosen.append(summary(exchange))
    return chosen


def tunnels(inspected):
    return [{
        "name": tunnel.name,
        "proto": tunnel.proto,
        "public_url": tunnel.public_url,
        "target": tunnel.target,
        "status": tunnel.status,
    } for tunnel in inspected]
