"""The client's settings: command line over environment over ~/.tpot/config.json.

Pure parsing and merging (of the inspector's options too): the caller passes the
environment, the config file's contents and --ca's PEM text in (tpot.client.files reads
the files).  Every error is a ClientError whose message is one sentence.  The wire
constants of the command itself (exit statuses, environment variable names, the config
file's place) are defined here once.
"""

import base64
import difflib
import hashlib
import hmac
import ipaddress
import os
import re
from dataclasses import dataclass

from tpot.client.policy import parse_allowed, parse_credentials
from tpot.protocol.auth import MAX_SECRET_LENGTH, MIN_SECRET_LENGTH, new_access_secret, valid_access_secret
from tpot.protocol.codec import HTTP, POOL, TCP
from tpot.protocol.names import name_problem

CONFIG_PATH = os.path.join("~", ".tpot", "config.json")
# tpot start's file of tunnels: the first, or the first of the others that exists.
START_PATHS = tuple(os.path.join("~", ".tpot", name) for name in ("tpot.toml", "tpot.yaml", "tpot.yml"))

# What the tpot command exits with.
EXIT_OK = 0
EXIT_FAILURE = 1

# The environment variables the client reads.
ENV_SERVER = "TPOT_SERVER"
ENV_AUTH_KEY = "TPOT_AUTH_KEY"
ENV_ACCESS_SECRET = "TPOT_ACCESS_SECRET"
ENV_BASIC_AUTH = "TPOT_BASIC_AUTH"
ENV_POOL = "TPOT_POOL"


# What --max-conversations is unless given: well under the usual 1024 open files.
DEFAULT_MAX_CONVERSATIONS = 500

# The inspector's address unless given (the next free port of INSPECT_PORTS when 4040 is
# taken), and how many exchanges it keeps unless told.
DEFAULT_INSPECT_HOST = "127.0.0.1"
INSPECT_PORTS = range(4040, 4050)
DEFAULT_INSPECT_PORT = INSPECT_PORTS[0]
DEFAULT_INSPECT_KEEP = 500
MAX_INSPECT_KEEP = 100_000

_URL = re.compile(r"(?:(https?)://)?([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?/?", re.IGNORECASE)


class ClientError(Exception):
    """Something the user must fix; the message is shown as it is."""


@dataclass(frozen=True)
class Address:
    scheme: str
    host: str
    port: int
    host_with_port: str


@dataclass(frozen=True)
class InspectSettings:
    """Where the inspector listens; `search`: the default address, so the next free port
    up to 4049 will do when 4040 is taken (an address the user gave must be had)."""

    host: str = DEFAULT_INSPECT_HOST
    port: int = DEFAULT_INSPECT_PORT
    search: bool = True
    keep: int = DEFAULT_INSPECT_KEEP

    @property
    def loopback(self):
        """Reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
        return self.host == "localhost" or getattr(_ip_address(self.host), "is_loopback", False)


@dataclass(frozen=True)
class ClientSettings:
    server: Address
    target: Address
    auth_key: str = None
    subdomain: str = None
    host_rewrite: str = None  # None: pass Host through untouched
    forwarded_headers: bool = True
    debug: bool = False
    # For https targets: skip certificate verification, or trust these PEM certificates
    # (from --ca) instead of the system's roots.
    target_insecure: bool = False
    target_ca: bytes = None
    # The live request log on stdout (off with --quiet); who may visit (tpot.client.policy).
    quiet: bool = False
    basic_auth: str = None  # "USER:PASS"
    allow_ip: tuple = ()  # ip_network objects; empty: any address
    # HTTP or TCP (`tpot tcp`: raw conversations only, reached by those who know access_secret).
    kind: str = HTTP
    access_secret: str = None
    # Clients with the same pool secret share their subdomain (docs/PROTOCOL.md, `pool`).
    pool: str = None
    # Conversations open at once; beyond, the server is told "no connect" (each holds a
    # connection to the target: a file descriptor).
    max_conversations: int = None
    # The traffic inspector (tpot http only); None: none.
    inspect: InspectSettings = None

    @property
    def required_extensions(self):
        """The extensions without which the tunnel must not stay open."""
        return frozenset(extension for extension, needed in ((TCP, self.kind == TCP), (POOL, self.pool)) if needed)

    @property
    def websocket_url(self):
        return self.websocket_url_for(self.subdomain)

    def websocket_url_for(self, subdomain):
        scheme = "wss" if self.server.scheme == "https" else "ws"
        query = f"?subdomain={subdomain}" if subdomain else ""
        return f"{scheme}://{self.server.host_with_port}/create-tpot{query}"

    def public_url(self, name):
        return f"{self.server.scheme}://{name}.{self.server.host_with_port}"


def parse_address(text, what):
    """`8080`, `host`, `host:port`, `http://host:port` or `https://host[:port]`."""
    text = (text or "").strip()
    if text.isdigit():
        text = f"localhost:{text}"
    match = _URL.fullmatch(text)
    port = match and match.group(3)
    if match is None or (port and not 1 <= int(port) <= 65535):
        raise ClientError(f"The {what} {text!r} is not valid: use host:port or http(s)://host[:port].")
    scheme = (match.group(1) or "http").lower()
    host = match.group(2)
    return Address(scheme, host.strip("[]"), int(port) if port else (443 if scheme == "https" else 80),
                   f"{host}:{port}" if port else host)


def client_settings(target, server=None, auth_key=None, subdomain=None, http_host=None,
                    no_host_rewrite=False, debug=False, env=None, config=None, no_forwarded_headers=False,
                    insecure=False, ca=None, quiet=False, basic_auth=None, allow_ip=(), kind=HTTP,
                    access_secret=None, max_conversations=None, pool=None, inspect=None, resolves=None):
    """Merge command-line values (None when not given) with `env` (a mapping like
    os.environ) and `config` (the config file's dict); both are empty when not given.

    `insecure`, `ca` (the PEM text of --ca FILE, as files.read_ca_file read it), `quiet` and
    `allow_ip` (CIDR strings) come from the command line only; `basic_auth` ("USER:PASS")
    also from TPOT_BASIC_AUTH.  With kind=TCP, `access_secret` (or TPOT_ACCESS_SECRET, or a
    new random one) is the secret people connecting must prove, and nothing of HTTP applies.
    `pool` (or TPOT_POOL) shares the subdomain with the other clients that give it.
    `inspect` (InspectSettings or None) is the inspector of an http tunnel.  `resolves(name)`,
    when given, says whether a TARGET that is a bare word (`notaport`, read as a host on
    port 80) is a host name that resolves; one that does not is refused.
    """
    env = {} if env is None else env
    config = {} if config is None else config
    server = configured_server(server, env, config)
    subdomain = subdomain or config.get("subdomain")
    if subdomain is not None and name_problem(subdomain.lower()) is not None:
        raise ClientError(f"The subdomain {subdomain!r} is not valid: {name_problem(subdomain.lower())}.")
    common = dict(
        server=parse_address(server, "server"),
        auth_key=configured_auth_key(auth_key, env, config),
        subdomain=subdomain.lower() if subdomain else None,
        debug=debug,
        max_conversations=parse_max_conversations(max_conversations),
        pool=_pool(pool or env.get(ENV_POOL), subdomain),
    )
    if kind == TCP:
        return _tcp_settings(target, env, access_secret, quiet, common)
    target_address = parse_address(target, "target")
    if resolves is not None:
        check_bare_target(target, resolves)
    if target_address.scheme != "https" and (insecure or ca):
        raise ClientError("The options --insecure and --ca only apply to an https:// target.")
    if insecure and ca:
        raise ClientError("Use either --insecure or --ca, not both.")
    basic_auth = basic_auth or env.get(ENV_BASIC_AUTH) or None
    try:
        if basic_auth is not None:
            parse_credentials(basic_auth)
        allowed = parse_allowed(allow_ip or ())
    except ValueError as error:
        raise ClientError(f"{error}.") from None
    no_host_rewrite = no_host_rewrite or bool(config.get("noHostRewrite"))
    host_rewrite = None if no_host_rewrite else (http_host or config.get("httpHost") or target_address.host_with_port)
    return ClientSettings(
        **common,
        target=target_address,
        host_rewrite=host_rewrite,
        forwarded_headers=not (no_forwarded_headers or config.get("noForwardedHeaders")),
        target_insecure=bool(insecure),
        target_ca=ca or None,
        quiet=bool(quiet),
        basic_auth=basic_auth,
        allow_ip=allowed,
        inspect=inspect,
    )


def check_bare_target(text, resolves):
    """A TARGET that is one word (no scheme, no port, not an address) is taken for a host
    name on port 80 only if `resolves(word)`: `tpot http notaport` is more likely a typo."""
    word = text.strip()
    bare = re.fullmatch(r"[a-z0-9.-]+", word, re.IGNORECASE) and not word.isdigit() and _ip_address(word) is None
    if bare and word != "localhost" and not resolves(word):
        raise ClientError(f"The target {word!r} is neither a port number nor a host name that resolves;"
                          " give a port (8080), host:port or a URL.")


def inspect_settings(address=None, disabled=False, keep=None, address_name="--inspect", keep_name="--inspect-keep"):
    """The inspector's settings from --inspect ADDR (`4041`, `127.0.0.1:4041`, `[::1]:4041`,
    `0.0.0.0:4040`; port 0: any free port), --no-inspect and --inspect-keep N; None when it
    is off.  The errors name the options `address_name` and `keep_name`."""
    if disabled and address is not None:
        raise ClientError(f"Use either {address_name} or --no-inspect, not both.")
    keep = _whole_number(keep, keep_name, DEFAULT_INSPECT_KEEP, MAX_INSPECT_KEEP)
    if disabled:
        return None
    if address is None:
        return InspectSettings(keep=keep)
    text = str(address).strip()
    host, port = DEFAULT_INSPECT_HOST, text
    match = re.fullmatch(r"(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]+)):([0-9]+)", text)
    if match is not None:
        host, port = match.group(1) or match.group(2), match.group(3)
    if not (port.isascii() and port.isdigit() and int(port) <= 65535) or not _inspect_host(host):
        raise ClientError(f"{address_name} takes PORT or HOST:PORT with an IP address or localhost"
                          f" (such as 127.0.0.1:4041), not {address!r}.")
    return InspectSettings(host, int(port), search=False, keep=keep)


def _inspect_host(host):
    # A name other than localhost could resolve to anything: the address must be one.
    return host == "localhost" or _ip_address(host) is not None


def _ip_address(text):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _whole_number(value, option, default, maximum=None):
    if value is None:
        return default
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= (maximum or int(text)):
        limits = f"from 1 to {maximum}" if maximum else "of at least 1"
        raise ClientError(f"{option} must be a whole number {limits}, not {value!r}.")
    return int(text)


def parse_max_conversations(value):
    """--max-conversations: a whole number of at least 1 (DEFAULT_MAX_CONVERSATIONS if None)."""
    return _whole_number(value, "--max-conversations", DEFAULT_MAX_CONVERSATIONS)


# The keys of ~/.tpot/config.json (those the reference client reads, and noForwardedHeaders).
CONFIG_KEYS = ("tpotServer", "authKey", "subdomain", "httpHost", "noHostRewrite", "noForwardedHeaders")


def config_warnings(config, path=CONFIG_PATH):
    """One warning per key of the config file that nothing reads, naming the closest known one."""
    warnings = []
    for key in config:
        if key in CONFIG_KEYS:
            continue
        close = difflib.get_close_matches(str(key), CONFIG_KEYS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(CONFIG_KEYS)})."
        warnings.append(f"{path} has the key {str(key)!r}, which tpot does not read{hint}")
    return warnings


def configured_server(given, env, config):
    """The server URL: the command line's, TPOT_SERVER or the config file's; one is needed."""
    server = given or env.get(ENV_SERVER) or config.get("tpotServer")
    if not server:
        raise ClientError(f"No server given: pass -t URL, set {ENV_SERVER} or tpotServer in {CONFIG_PATH}.")
    return server


def configured_auth_key(given, env, config):
    return given or env.get(ENV_AUTH_KEY) or config.get("authKey") or None


def check_access_secret(secret, what="access secret"):
    """`secret` if it is a valid access secret (tpot tcp, tpot connect); ClientError if not."""
    if not valid_access_secret(secret):
        raise ClientError(
            f"The {what} must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} printable characters without spaces."
        )
    return secret


def _pool(secret, subdomain):
    if secret is None:
        return None
    check_access_secret(secret, "pool secret")
    if not subdomain:
        raise ClientError("A pool shares one subdomain: give it with -s NAME.")
    return secret


def pool_access_secret(pool):
    """The access secret of a TCP pool's members unless --secret is given: the same for
    every member (a TCP pool needs one), and not the pool secret, which joins the pool."""
    digest = hmac.new(pool.encode(), b"TPoT pool access secret", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _tcp_settings(target, env, access_secret, quiet, common):
    target_address = parse_address(target, "target")
    if "://" in target or not re.search(r":[0-9]+$", target_address.host_with_port):
        raise ClientError(f"The target {target!r} is not valid for tpot tcp: use PORT or host:port.")
    given = access_secret or env.get(ENV_ACCESS_SECRET)
    secret = check_access_secret(given or (pool_access_secret(common["pool"]) if common["pool"] else new_access_secret()))
    return ClientSettings(
        **common,
        target=target_address,
        host_rewrite=None,
        forwarded_headers=False,
        quiet=bool(quiet),
        kind=TCP,
        access_secret=secret,
    )
