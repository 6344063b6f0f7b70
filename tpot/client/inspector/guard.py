"""Who may use the inspector: pure checks of a request's Host and of the per-run token.

The inspector listens on loopback, but a web page open in the same browser can still send
it requests.  DNS rebinding (a name of the attacker's that resolves to 127.0.0.1) shows in
Host, which must name the inspector's own address or localhost.  Requests that act (replay,
delete) must carry the token that only the inspector's own page holds, in a header a
cross-site form cannot set.
"""

import hmac
import ipaddress

TOKEN_HEADER = "X-TPoT-Token"
_WILDCARDS = ("0.0.0.0", "::")


def host_allowed(host_header, listen_host, port):
    """Whether a request with this Host (text, maybe None) is meant for an inspector
    listening on `listen_host`:`port`: `localhost`, its own address, or, bound to every
    address, any address literal — never another name."""
    host, given_port = _split_host(host_header or "")
    if host is None or (given_port or 80) != port:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if listen_host in _WILDCARDS:
        return True
    return address == ipaddress.ip_address(listen_host) if listen_host != "localhost" else address.is_loopback


def _split_host(value):
    """(host in lower case, port or None) of a Host value; (None, None) if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None, None
        port = rest[1:] or None
    else:
        host, _, port = value.partition(":")
        port = port or None
    if not host or (port is not None and not (port.isascii() and port.isdigit() and len(port) <= 5)):
        return None, None
    return host, int(port) if port is not None else None


def token_matches(given, token):
    """Whether `given` (a header value, maybe None) is this run's token, in constant time."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("ascii"))
