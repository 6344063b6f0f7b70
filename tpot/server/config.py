"""Server settings: command line over environment over `.env`, checked once at start-up."""

import os
import socket
from dataclasses import dataclass, field

from dotenv import dotenv_values

from tpot.http.addresses import parse_networks
from tpot.protocol.auth import MIN_KEY_LENGTH
from tpot.protocol.names import RESERVED_NAMES, name_problem

DEFAULT_PORT = 3000
# The environment variables (and .env keys) the server reads.
ENV_DOMAIN, ENV_AUTH_KEY, ENV_PORT, ENV_METRICS_TOKEN = "DOMAIN", "AUTH_KEY", "PORT", "METRICS_TOKEN"

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
class ServerSettings:
    domain: str
    auth_key: str = None
    listen: list = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    metrics_token: str = None
    trusted_proxies: tuple = ()
    reserved_names: frozenset = RESERVED_NAMES


def environment(dotenv_path=".env"):
    """The process environment over the `.env` file in the working directory."""
    values = {k: v for k, v in dotenv_values(dotenv_path).items() if v is not None} if os.path.exists(dotenv_path) else {}
    values.update(os.environ)
    return values


def server_settings(domain=None, auth_key=None, port=None, listen=(), env=None, limits=None,
                    metrics_token=None, trusted_proxies=(), reserved_names=None):
    """Merge command-line values (None when not given) with `env`; raise ConfigError.

    `limits` maps Limits field names to command-line strings (None when not given).
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
    )


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
        option = "--" + name.replace("_", "-")
        try:
            number = kind(value)
        except ValueError:
            number = 0
        if number <= 0:
            raise ConfigError(f"{option} must be a positive {'whole ' if kind is int else ''}number, not {value!r}.")
        parsed[name] = number
    return Limits(**parsed)


def parse_port(value):
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ConfigError(f"PORT must be a number from 1 to 65535, not {text!r}.")
    return int(text)
