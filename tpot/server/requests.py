"""Checks of the bare domain's WebSocket requests: `/create-tpot` and `/connect-tpot`.

Pure functions over a parsed request head (tpot.http.head.RequestHead): each returns what
the request asks for, or raises HeadError with the status to answer.
"""

import hashlib

from tpot.http.head import HeadError
from tpot.protocol import auth
from tpot.protocol.codec import ACCESS_SECRET_HEADER, EXTENSIONS_HEADER, HTTP, IPV6, POOL, POOL_HEADER, RECLAIM, TCP
from tpot.protocol.names import RESERVED_NAMES, name_problem

CREATE_PATH = "/create-tpot"
CONNECT_PATH = "/connect-tpot"
SUPPORTED_EXTENSIONS = frozenset({RECLAIM, IPV6, TCP, POOL})


def check_create_request(head, reserved=RESERVED_NAMES):
    """The requested name (or None for a random one); HeadError if the request is invalid."""
    if head.path != CREATE_PATH:
        raise HeadError(404, "Not found: tunnels are created at /create-tpot.")
    check_upgrade(head, "create a tunnel")
    return _requested_name(head, reserved)


def check_connect_request(head):
    """The name of the TCP tunnel a `/connect-tpot` request asks for; HeadError if invalid."""
    check_upgrade(head, "connect to a tunnel")
    name = _requested_name(head)
    if name is None:
        raise HeadError(400, "Say which tunnel to connect to: /connect-tpot?subdomain=NAME.")
    return name


def check_upgrade(head, purpose):
    """HeadError unless `head` is a WebSocket upgrade (GET, HTTP/1.1, RFC 6455 headers)."""
    if head.method != "GET":
        raise HeadError(405, f"Use GET with a WebSocket upgrade to {purpose}.")
    if head.version != "1.1":
        raise HeadError(400, "A WebSocket upgrade needs HTTP/1.1.")
    if (
        "websocket" not in head.header_tokens("upgrade")
        or "upgrade" not in head.header_tokens("connection")
        or not head.header("sec-websocket-key")
        or head.header("sec-websocket-version") != "13"
    ):
        raise HeadError(400, "Not a valid WebSocket upgrade request.")


def _requested_name(head, reserved=frozenset()):
    """The lower-cased `subdomain` of the query, None if absent or empty; HeadError if
    invalid or one of the `reserved` names."""
    name = head.query("subdomain")
    if name is None or name == "":
        return None
    name = name.lower()
    problem = name_problem(name)
    if problem is not None:
        raise HeadError(400, f"Invalid subdomain: {problem}.")
    if name in reserved:
        raise HeadError(400, f"The subdomain {name} is reserved on this server; pick another.")
    return name


def requested_extensions(head):
    """The extensions of ours that the client asked for and we support."""
    return frozenset(head.header_tokens(EXTENSIONS_HEADER) & SUPPORTED_EXTENSIONS)


def access_secret(head, extensions):
    """The access secret of a TCP tunnel (None for HTTP); HeadError if it is missing or weak."""
    if TCP not in extensions:
        return None
    return _secret_header(head, ACCESS_SECRET_HEADER, "A TCP tunnel")


def pool_key(head, extensions, name, access_secret):
    """What the name store knows a pool by (None without `pool`): a SHA-256 of the pool
    secret with the tunnel's kind and access secret, so that only tunnels of one kind, and
    TCP tunnels with one access secret, can share a name; HeadError if the secret is
    missing or weak, or no name was asked for."""
    if POOL not in extensions:
        return None
    secret = _secret_header(head, POOL_HEADER, "A pool")
    if name is None:
        raise HeadError(400, "A pool needs a name: /create-tpot?subdomain=NAME.")
    kind = TCP if access_secret is not None else HTTP
    material = "\n".join(("TPoT-Pool", kind, access_secret or "", secret))
    return hashlib.sha256(material.encode()).hexdigest()


def _secret_header(head, header, what):
    secret = head.header(header.lower())
    if not auth.valid_access_secret(secret):
        raise HeadError(400, (
            f"{what} needs {header}: {auth.MIN_SECRET_LENGTH} to"
            f" {auth.MAX_SECRET_LENGTH} printable characters without spaces."
        ))
    return secret
