"""What the client says when a tunnel cannot be opened: one sentence that says what to fix.

Pure: from what the attempt ended with (an HTTP refusal and its headers, the error of a
connection that failed or was lost before the tunnel opened) and the settings, to text.
What the server sent is shown only through `printable_text` (it may be hostile).
"""

from tpot.client.requestlog import printable_text
from tpot.client.settings import ENV_AUTH_KEY
from tpot.protocol.codec import DOMAIN_HEADER

REFUSALS = {
    400: "The server refused the request as invalid (400); check the subdomain.",
    429: "The server refused after too many failed attempts (429); wait a minute and check your auth key.",
    503: "The server cannot take another tunnel right now (503); try again later.",
}


def refusal(status, headers, settings, name=None, reconnecting=False):
    """The sentence for an upgrade the server answered with `status` (headers: lower-case
    names to values) when asking for `name`."""
    headers = headers or {}
    if status == 401:
        if not settings.auth_key:
            return f"This server requires an auth key (401): pass -k KEY or set {ENV_AUTH_KEY}."
        return f"The server did not accept the auth key (401); check -k or {ENV_AUTH_KEY}."
    if status == 404:
        return _not_found(headers.get(DOMAIN_HEADER.lower()), settings.server)
    if status == 409:
        return _taken(name or settings.subdomain, headers.get("retry-after"), reconnecting)
    if status in REFUSALS:
        return REFUSALS[status]
    return f"The server refused the tunnel with HTTP status {status}."


def _not_found(domain, server):
    if not domain:
        return "The server answered 404 Not Found; check the server URL."
    domain = printable_text(domain)
    port = f":{server.port}" if server.host_with_port.endswith(f":{server.port}") else ""
    return (f"The server at {server.host_with_port} serves {domain} and *.{domain}, not {server.host} (404);"
            f" use -t {server.scheme}://{domain}{port}.")


def _taken(name, retry_after, reconnecting):
    if reconnecting:
        return "The server still holds the name for the old connection (409) until it times out."
    shown = printable_text(name or "")
    seconds = retry_after.strip() if isinstance(retry_after, str) else ""
    if seconds.isascii() and seconds.isdigit():
        return (f"The subdomain {shown} is held for another client's dropped tunnel for about {int(seconds)} s more"
                " (409); wait, or pick another with -s.")
    return f"The subdomain {shown} is already in use by another client (409); pick another with -s."


# twisted.internet.error's exceptions, by name: this module imports no framework.
_UNREACHABLE = {
    "DNSLookupError": "the name {host} does not resolve",
    "ConnectionRefusedError": "connection refused: nothing listens there",
    "TimeoutError": "no answer",
    "TCPTimedOutError": "no answer",
    "NoRouteError": "no route to the host",
}


def unreachable(server, failure):
    """The sentence for a connection to `server` that could not be made (`failure`: its error)."""
    where = f"{server.host}:{server.port}"
    why = _UNREACHABLE.get(type(failure).__name__, "").format(host=server.host)
    return f"The server {where} could not be reached" + (f" ({why})." if why else ".")


def lost_before_open(server, failure):
    """The sentence for a connection that ended before the tunnel opened (`failure`: why, or None)."""
    if server.scheme == "https" and _is_tls(failure):
        from tpot.client.tls import describe_tls_failure

        why = describe_tls_failure(_Reason(failure))
        if "certificate" in why:
            return (f"The server {server.host_with_port}'s certificate is not trusted ({why}); for a private CA"
                    " set SSL_CERT_FILE to its PEM file.")
        return (f"The server {server.host_with_port} did not complete a TLS handshake ({why}); if it serves"
                f" plain HTTP, use -t http://{server.host_with_port}.")
    return f"The server {server.host_with_port} closed the connection before the tunnel opened."


def _is_tls(failure):
    kind = type(failure)
    return kind.__module__.startswith("OpenSSL") or kind.__name__ == "VerificationError"


class _Reason:
    """What describe_tls_failure reads (a Failure's `value`)."""

    def __init__(self, value):
        self.value = value
