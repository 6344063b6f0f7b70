"""The server's start-up line, in words a person can act on (pure): where it listens, as
bound, and the client command that reaches it.

    tpot 0.3.0 serving localhost on port 3000 (IPv4 and IPv6), auth off; connect with: tpot http PORT -t http://localhost:3000
"""

from dataclasses import dataclass

# What a listener's endpoint string says of its connections, by its first word.
PLAIN, TLS, PROXIED, UNIX = "plain", "TLS", "PROXY protocol", "UNIX"
_KINDS = {"ssl": TLS, "haproxy": PROXIED, "unix": UNIX}
IPV4, IPV6 = "IPv4", "IPv6"
_ANY = ("0.0.0.0", "::", "")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Listener:
    """A bound listening socket: `kind` (PLAIN, TLS, PROXIED, UNIX), the address it is bound
    to (`host` a path for UNIX) and the IP versions it takes."""

    kind: str
    host: str
    port: int = 0
    families: frozenset = frozenset()


def kind_of(description):
    """What the endpoint string `description` (as given to --listen) serves."""
    return _KINDS.get(description.split(":", 1)[0].strip().lower(), PLAIN)


def merged(listeners):
    """`listeners` with those that differ only in IP version as one: the IPv4 and the
    IPv6-only socket of one port are one port taking both, to a person."""
    by_place = {}
    for listener in listeners:
        host = "" if listener.host in _ANY and listener.kind != UNIX else listener.host
        place = (listener.kind, host, listener.port)
        earlier = by_place.get(place, frozenset())
        by_place[place] = earlier | listener.families
    return [Listener(kind, host, port, families) for (kind, host, port), families in by_place.items()]


def describe(listener):
    """`port 3000 on 127.0.0.1 (IPv4, TLS)`; `UNIX socket PATH`."""
    if listener.kind == UNIX:
        return f"UNIX socket {listener.host}"
    where = f"port {listener.port}" + (f" on {listener.host}" if listener.host not in _ANY else "")
    details = [" and ".join(sorted(listener.families))] if listener.families else []
    if listener.kind != PLAIN:
        details.append(listener.kind)
    return where + (f" ({', '.join(details)})" if details else "")


def connect_hint(domain, listeners, auth_key):
    """The client command for the first listener a client reaches directly, or None when
    every one is behind a proxy (PROXY protocol) or a UNIX socket."""
    for listener in listeners:
        if listener.kind in (PLAIN, TLS):
            scheme = "https" if listener.kind == TLS else "http"
            port = "" if listener.port == _DEFAULT_PORTS[scheme] else f":{listener.port}"
            return f"tpot http PORT -t {scheme}://{domain}{port}" + (" -k KEY" if auth_key else "")
    return None


def startup_line(version, domain, listeners, auth_key, workers="", cluster=""):
    """The line logged once every listener is bound (never the key itself); `workers` and
    `cluster` are what the caller adds about this process's place (", worker 0 of 2", ", node ...")."""
    listeners = merged(listeners)
    hint = connect_hint(domain, listeners, auth_key)
    return (
        f"tpot {version} serving {domain} on {' and '.join(describe(listener) for listener in listeners)},"
        f" auth {'on' if auth_key else 'off'}{workers}{cluster}" + (f"; connect with: {hint}" if hint else "")
    )
