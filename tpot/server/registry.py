"""The TunnelRegistry: who owns which name, and which tunnel serves it.

Both sides of the server talk to it: the control endpoint claims a name and attaches the
tunnel once its WebSocket is open; the visitor side looks a name up.  `ITunnelRegistry`
returns Deferreds wherever a shared store would need I/O, so a multi-node registry (names
held in a shared store, tunnels living on other nodes and reached through a proxy object)
can stand in for the in-memory one without changing its callers.
"""

import hmac
import secrets

from twisted.application.service import Service
from twisted.internet import defer
from zope.interface import Interface, implementer

from tpot.protocol import names

# How long a dropped tunnel's name waits for its client to come back (reclaim extension).
RESERVE_SECONDS = 60


class NameTaken(Exception):
    """The name is held by another tunnel."""


class RegistryFull(Exception):
    """No more tunnels may be opened here."""


class ITunnelRegistry(Interface):
    def claim(name=None, token=None):
        """Reserve `name`, or a random free name if None, for a tunnel about to open.

        A name still reserved for a dropped tunnel is given only to a claim carrying that
        tunnel's reclaim token.  Returns a Deferred firing with the name, or failing with
        NameTaken or RegistryFull.
        """

    def reclaim_token(name):
        """The secret that lets the current holder of `name` claim it again after a drop."""

    def attach(name, tunnel):
        """Bind an open tunnel to a name it claimed; visitors are routed to it from now on."""

    def release(name, tunnel=None, reserve=False):
        """Give a name back; with `tunnel`, only if that tunnel still holds it.

        With `reserve`, the name stays reserved for its reclaim token for a while.
        """

    def lookup(name):
        """A Deferred firing with the tunnel serving `name`, or None.

        The tunnel provides `open_conversation(visitor, host, port)` (returning the
        conversation id or raising ConversationRefused); a multi-node registry may return
        a proxy to a tunnel on another node.
        """

    def active_tunnels():
        """How many tunnels are attached here."""

    def active_conversations():
        """How many conversations the tunnels attached here have open."""

    def shutdown_tunnels():
        """Close every tunnel attached here, telling clients the server is restarting."""


class _Entry:
    """One name: claimed (tunnel None), attached, or reserved after a drop (until set)."""

    __slots__ = ("tunnel", "token", "expiry")

    def __init__(self, token):
        self.tunnel = None
        self.token = token
        self.expiry = None


def _reclaims(entry, token):
    """Whether `token` takes back a name reserved after its tunnel dropped."""
    if entry is None or entry.expiry is None or not token:
        return False
    return hmac.compare_digest(entry.token.encode(), token.encode("utf-8", "replace"))


@implementer(ITunnelRegistry)
class TunnelRegistry(Service):
    """The single-process registry, a twistd service of the application."""

    name = "tunnel-registry"

    def __init__(self, max_tunnels=None, clock=None, reserve_seconds=RESERVE_SECONDS):
        self.max_tunnels = max_tunnels
        self.reserve_seconds = reserve_seconds
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self._entries = {}
        self._attached = 0

    def claim(self, name=None, token=None):
        try:
            return defer.succeed(self._claim(name, token))
        except (NameTaken, RegistryFull) as error:
            return defer.fail(error)

    def _claim(self, name, token):
        entry = self._entries.get(name) if name is not None else None
        if _reclaims(entry, token):
            entry.expiry.cancel()
            entry.expiry = None
            return name
        if self.max_tunnels is not None and len(self._entries) >= self.max_tunnels:
            raise RegistryFull("the server has reached its tunnel limit")
        if entry is not None:
            raise NameTaken(name)
        if name is None:
            name = self._free_random_name()
        self._entries[name] = _Entry(secrets.token_urlsafe(24))
        return name

    def _free_random_name(self):
        while True:
            name = names.random_name()
            if name not in self._entries:
                return name

    def reclaim_token(self, name):
        return self._entries[name].token

    def attach(self, name, tunnel):
        entry = self._entries[name]
        if entry.tunnel is None:
            self._attached += 1
        entry.tunnel = tunnel

    def release(self, name, tunnel=None, reserve=False):
        entry = self._entries.get(name)
        if entry is None or entry.expiry is not None:
            return
        if tunnel is not None and entry.tunnel not in (None, tunnel):
            return  # a newer tunnel holds the name now
        if entry.tunnel is not None:
            self._attached -= 1
        if reserve and entry.tunnel is not None:
            entry.tunnel = None
            entry.expiry = self.clock.callLater(self.reserve_seconds, self._expire, name, entry)
        else:
            del self._entries[name]

    def _expire(self, name, entry):
        if self._entries.get(name) is entry:
            del self._entries[name]

    def lookup(self, name):
        entry = self._entries.get(name)
        return defer.succeed(None if entry is None else entry.tunnel)

    def active_tunnels(self):
        return self._attached

    def active_conversations(self):
        return sum(len(tunnel.conversations) for tunnel in self._tunnels())

    def _tunnels(self):
        return [entry.tunnel for entry in self._entries.values() if entry.tunnel is not None]

    def shutdown_tunnels(self):
        for tunnel in self._tunnels():
            tunnel.shutdown()

    def stopService(self):
        # Tunnels are closed by the draining listeners (tpot.server.drain), before this matters.
        for entry in self._entries.values():
            if entry.expiry is not None and entry.expiry.active():
                entry.expiry.cancel()
        return super().stopService()
