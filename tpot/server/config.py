"""Server settings: command line over environment over `.env`, checked once at start-up."""

import dataclasses
import os
import re
import secrets
import socket
from dataclasses import dataclass, field

from dotenv import dotenv_values

from tpot.http.addresses import parse_networks
from tpot.server.cluster.hop import split_address
from tpot.server.cluster.redis_store import parse_redis_url
from tpot.protocol.auth import MIN_KEY_LENGTH
from tpot.protocol.names import RESERVED_NAMES, name_problem

DEFAULT_PORT = 3000
# The environment variables (and .env keys) the server reads.
ENV_DOMAIN, ENV_AUTH_KEY, ENV_PORT, ENV_METRICS_TOKEN = "DOMAIN", "AUTH_KEY", "PORT", "METRICS_TOKEN"
ENV_REDIS, ENV_CLUSTER_SECRET, ENV_ADVERTISE = "REDIS_URL", "CLUSTER_SECRET", "TPOT_ADVERTISE"
DEFAULT_PEER_LISTEN = "tcp:3001"
MIN_CLUSTER_SECRET_LENGTH = 32
DEFAULT_NODE_TTL = 10.0
# --workers: past this many, a machine wants more nodes rather than more processes.
MAX_WORKERS = 64
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# The port of a plain `tcp:PORT...` endpoint, for the address advertised by default.
_ENDPOINT_PORT = re.compile(r"tcp6?:(?:port=)?([0-9]+)(?::|$)")

# The listeners worker 0 can give the other workers (tpot.server.workers): plain TCP, maybe
# behind a PROXY header; a TLS listener's connections would reach them undecrypted.
_SHAREABLE = ("tcp:", "tcp6:", "haproxy:tcp:", "haproxy:tcp6:")

# What a socket listening on every IPv6 address (`::`) takes, per `ip_stack`.
DUAL_STACK = "dual-stack"  # IPv4 too (Linux's default)
IPV6_ONLY = "ipv6-only"  # IPv6 only (net.ipv6.bindv6only=1, the BSDs, Windows)
NO_IPV6 = "no-ipv6"  # the system has no IPv6


class ConfigError(Exception):
    """A setting is missing or invalid; the message says what to fix, in one sentence."""


@dataclass(frozen=True)
class Limits:
    """What one party may cost the server; None means no limit."""

    header_timeout: float = 10.0
    idle_timeout: float = 3600.0
    drain_timeout: float = 30.0
    max_tunnels: int = None
    max_connections_per_ip: int = None


@dataclass(frozen=True)
class ClusterSettings:
    """Being one node of a cluster (`--redis`)."""

    redis_url: str = field(repr=False)  # may hold a password
    secret: str = field(repr=False)
    node_id: str
    peer_listen: str
    advertise: str  # HOST:PORT other nodes dial
    node_ttl: float = DEFAULT_NODE_TTL


@dataclass(frozen=True)
class ServerSettings:
    domain: str
    auth_key: str = None
    listen: list = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    metrics_token: str = None
    trusted_proxies: tuple = ()
    reserved_names: frozenset = RESERVED_NAMES
    cluster: ClusterSettings = None  # None: one process, the in-memory registry
    # --workers: processes on this machine sharing the listening sockets, and which one this is.
    workers: int = 1
    worker: int = 0


def environment(dotenv_path=".env"):
    """The process environment over the `.env` file in the working directory."""
    values = {k: v for k, v in dotenv_values(dotenv_path).items() if v is not None} if os.path.exists(dotenv_path) else {}
    values.update(os.environ)
    return values


def server_settings(domain=None, auth_key=None, port=None, listen=(), env=None, limits=None,
                    metrics_token=None, trusted_proxies=(), reserved_names=None, cluster=None):
    """Merge command-line values (None when not given) with `env`; raise ConfigError.

    `limits` maps Limits field names to command-line strings (None when not given), and so
    does `cluster` for the options of cluster_settings.
    """
    env = environment() if env is None else env
    domain = (domain or env.get(ENV_DOMAIN) or "").strip().lower().rstrip(".")
    if not domain:
        raise ConfigError("DOMAIN is not set: pass --domain or set DOMAIN (for example DOMAIN=localhost).")
    auth_key = auth_key if auth_key is not None else env.get(ENV_AUTH_KEY) or None
    if auth_key is not None and len(auth_key) < MIN_KEY_LENGTH:
        raise ConfigError(f"AUTH_KEY is too short: it needs at least {MIN_KEY_LENGTH} characters.")
    if not listen:
        listen = default_listen(parse_port(port if port is not None else env.get(ENV_PORT, DEFAULT_PORT)))
    try:
        networks = parse_networks(trusted_proxies)
    except ValueError as error:
        raise ConfigError(f"{error}.") from None
    metrics_token = metrics_token if metrics_token is not None else env.get(ENV_METRICS_TOKEN) or None
    return ServerSettings(
        domain, auth_key, list(listen), parse_limits(limits or {}), metrics_token, networks,
        RESERVED_NAMES if reserved_names is None else parse_name_list(reserved_names),
        cluster_settings(env=env, **(cluster or {})),
    )


def worker_settings(settings, workers=None, worker=None):
    """`settings` for worker `worker` (0: the first, which starts the others) of `workers`
    (strings from the command line, None when not given); ConfigError if workers are asked
    for without a cluster.  Each worker is a node of the cluster of its own: its id gets
    `-wN`, its peer port and advertised port are N more than the ones given."""
    count = 1 if workers is None else positive_number("--workers", workers, int)
    if count > MAX_WORKERS:
        raise ConfigError(f"--workers must be at most {MAX_WORKERS}, not {count}; run more nodes instead.")
    if count == 1:
        return settings
    if settings.cluster is None:
        raise ConfigError(f"--workers {count} needs --redis URL (or REDIS_URL): workers share their tunnels"
                          " through Redis, as the nodes of a cluster do.")
    for description in settings.listen:
        if not description.startswith(_SHAREABLE):
            raise ConfigError(f"--workers shares tcp:, tcp6: and haproxy:tcp listeners only, not {description!r};"
                              " terminate TLS in front (nginx, an ingress) or leave out --workers.")
    index = 0 if worker is None else int(worker)
    cluster = settings.cluster
    match = _ENDPOINT_PORT.match(cluster.peer_listen)
    if match is None or match.group(1) == "0":
        raise ConfigError(f"--workers needs a --peer-listen with a fixed port (tcp:PORT), not {cluster.peer_listen!r};"
                          " each worker takes the next port.")
    host, port = split_address(cluster.advertise)
    start, end = match.span(1)
    shifted = dataclasses.replace(
        cluster,
        node_id=f"{cluster.node_id}-w{index}",
        peer_listen=f"{cluster.peer_listen[:start]}{int(match.group(1)) + index}{cluster.peer_listen[end:]}",
        advertise=f"{f'[{host}]' if ':' in host else host}:{port + index}",
    )
    return dataclasses.replace(settings, cluster=shifted, workers=count, worker=index)


def cluster_settings(redis=None, cluster_secret=None, node_id=None, advertise=None, peer_listen=None,
                     node_ttl=None, env=None):
    """The ClusterSettings of the command line (None when not given) over `env`, or None
    without a Redis URL; ConfigError if they do not make a node."""
    env = {} if env is None else env
    url = redis or env.get(ENV_REDIS) or None
    if url is None:
        given = [name for name, value in (("--cluster-secret", cluster_secret), ("--node-id", node_id),
                                          ("--advertise", advertise), ("--peer-listen", peer_listen),
                                          ("--node-ttl", node_ttl)) if value is not None]
        if given:
            raise ConfigError(f"{given[0]} is for a cluster: add --redis URL (or set REDIS_URL), or leave it out.")
        return None
    try:
        parse_redis_url(url)
    except ValueError as error:
        raise ConfigError(f"--redis: {error}") from None
    secret = cluster_secret or env.get(ENV_CLUSTER_SECRET) or ""
    if len(secret) < MIN_CLUSTER_SECRET_LENGTH:
        raise ConfigError(
            f"{'CLUSTER_SECRET is too short' if secret else 'CLUSTER_SECRET is not set'}: a cluster needs"
            f" --cluster-secret (or CLUSTER_SECRET) of at least {MIN_CLUSTER_SECRET_LENGTH} characters,"
            " the same on every node."
        )
    node_id = node_id or f"{socket.gethostname().split('.')[0] or 'node'}-{secrets.token_hex(3)}"
    if not _NODE_ID.fullmatch(node_id):
        raise ConfigError(f"--node-id must be letters, digits, '.', '_' or '-' (at most 63), not {node_id!r}.")
    peer_listen = peer_listen or DEFAULT_PEER_LISTEN
    advertise = advertise or env.get(ENV_ADVERTISE) or _default_advertise(peer_listen)
    try:
        split_address(advertise)
    except ValueError:
        raise ConfigError(f"--advertise must be HOST:PORT (where other nodes reach this one), not {advertise!r}.") from None
    ttl = DEFAULT_NODE_TTL if node_ttl is None else positive_number("--node-ttl", node_ttl, float)
    return ClusterSettings(url, secret, node_id, peer_listen, advertise, ttl)


def _default_advertise(peer_listen):
    match = _ENDPOINT_PORT.match(peer_listen)
    if match is None or match.group(1) == "0":
        raise ConfigError(f"Say where other nodes reach this one: --advertise HOST:PORT (--peer-listen {peer_listen} has no fixed port).")
    return f"{socket.getfqdn()}:{match.group(1)}"


def parse_name_list(text):
    """--reserved-names: comma-separated names (an empty list reserves none)."""
    names = frozenset(part.strip().lower() for part in text.split(",") if part.strip())
    for name in sorted(names):
        problem = name_problem(name)
        if problem is not None:
            raise ConfigError(f"--reserved-names: {name!r} is not a tunnel name ({problem}).")
    return names


def default_listen(port, stack=None):
    """The endpoints served without --listen: every IPv6 and IPv4 address where the system
    has both, else every IPv4 one; `stack` is what `ip_stack` says (asked when None)."""
    stack = ip_stack() if stack is None else stack
    # A deeper accept queue than the default 50: bursts of connections are normal here.
    ipv4 = f"tcp:{port}:backlog=1024"
    # `::` with its colons escaped, as endpoint strings need.  Dual-stack, this one socket
    # also takes IPv4, whose peers it reports as ::ffff:a.b.c.d (tpot.http.addresses.plain_address).
    ipv6 = rf"tcp6:{port}:interface=\:\::backlog=1024"
    return {DUAL_STACK: [ipv6], IPV6_ONLY: [ipv6, ipv4]}.get(stack, [ipv4])


def ip_stack():
    """DUAL_STACK, IPV6_ONLY or NO_IPV6 for a socket on `::` here.  Twisted leaves its
    IPV6_V6ONLY as the system sets it by default, which a fresh socket shows."""
    if not socket.has_ipv6:
        return NO_IPV6
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::", 0))
            v6only = probe.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    except OSError:  # no IPv6 in the kernel, or none this process may use
        return NO_IPV6
    return IPV6_ONLY if v6only else DUAL_STACK


def parse_limits(values):
    parsed = {}
    for name, value in values.items():
        if value is None:
            continue
        kind = int if name.startswith("max_") else float
        parsed[name] = positive_number("--" + name.replace("_", "-"), value, kind)
    return Limits(**parsed)


def positive_number(option, value, kind):
    """`value` (a string) as a positive `kind` (int or float); ConfigError otherwise."""
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise ConfigError(f"{option} must be a positive {'whole ' if kind is int else ''}number, not {value!r}.")
    return number


def parse_port(value):
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ConfigError(f"PORT must be a number from 1 to 65535, not {text!r}.")
    return int(text)
