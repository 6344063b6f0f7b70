"""The TunnelRegistry: who owns which name, and which tunnel serves it.

Both sides of the server talk to it: the control endpoint claims a name and attaches the
tunnel once its WebSocket is open; the visitor side looks a name up.  `ITunnelRegistry`
returns Deferreds wherever a shared store would need I/O, so a multi-node registry (names
held in a shared store, tunnels living on other nodes and reached through a proxy object)
can stand in for the in-memory one without changing its callers.
"""

import re
import secrets
import string

from twisted.application.service import Service
from twisted.internet import defer
from zope.interface import Interface, implementer

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,23}")
RANDOM_NAME_LENGTH = 8
_BASE36 = string.digits + string.ascii_lowercase


class NameTaken(Exception):
    """The name is held by another tunnel."""


class RegistryFull(Exception):
    """No more tunnels may be opened here."""


def valid_name(name):
    return NAME_PATTERN.fullmatch(name) is not None


def random_name():
    return "".join(secrets.choice(_BASE36) for _ in range(RANDOM_NAME_LENGTH))


class ITunnelRegistry(Interface):
    def claim(name=None):
        """Reserve `name`, or a random free name if None, for a tunnel about to open.

        Returns a Deferred firing with the name, or failing with NameTaken or RegistryFull.
        """

    def attach(name, tunnel):
        """Bind an open tunnel to a name it claimed; visitors are routed to it from now on."""

    def release(name, tunnel=None):
        """Give a claimed name back; with `tunnel`, only if that tunnel still holds it."""

    def lookup(name):
        """A Deferred firing with the tunnel serving `name`, or None.

        The tunnel provides `open_conversation(visitor, host, port)` (returning the
        conversation id or raising ConversationRefused); a multi-node registry
        may return a proxy to a tunnel on another node.
        """

    def active_tunnels():
        """How many tunnels are attached here."""


_CLAIMED = object()


@implementer(ITunnelRegistry)
class TunnelRegistry(Service):
    """The single-process registry, a twistd service of the application."""

    name = "tunnel-registry"

    def __init__(self, max_tunnels=None):
        self.max_tunnels = max_tunnels
        self._names = {}

    def claim(self, name=None):
        try:
            return defer.succeed(self._claim(name))
        except (NameTaken, RegistryFull) as error:
            return defer.fail(error)

    def _claim(self, name):
        if self.max_tunnels is not None and len(self._names) >= self.max_tunnels:
            raise RegistryFull("the server has reached its tunnel limit")
        if name is None:
            name = self._free_random_name()
        if name in self._names:
            raise NameTaken(name)
        self._names[name] = _CLAIMED
        return name

    def _free_random_name(self):
        while True:
            name = random_name()
            if name not in self._names:
                return name

    def attach(self, name, tunnel):
        self._names[name] = tunnel

    def release(self, name, tunnel=None):
        held = self._names.get(name)
        if held is not None and (tunnel is None or held is tunnel or held is _CLAIMED):
            del self._names[name]

    def lookup(self, name):
        tunnel = self._names.get(name)
        return defer.succeed(None if tunnel is _CLAIMED else tunnel)

    def active_tunnels(self):
        return sum(1 for tunnel in self._names.values() if tunnel is not _CLAIMED)

    def stopService(self):
        for tunnel in [t for t in self._names.values() if t is not _CLAIMED]:
            tunnel.shutdown()
        return super().stopService()
