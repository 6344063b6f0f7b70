"""The in-memory name store: the default, for a server that runs as one process.

Reservations expire by the injected clock, compared whenever the store is asked (claim,
attach, lookup), the way a shared store's key TTLs would: no timers to cancel at shutdown.
"""

import hmac
import secrets
from collections import OrderedDict

from twisted.internet import defer
from zope.interface import implementer

from tpot.protocol import names
from tpot.server.store import (
    RESERVE_SECONDS,
    Claim,
    INameStore,
    LeaseLost,
    LocalRoute,
    NameTaken,
    RegistryFull,
)


class _Holding:
    """One name: claimed (info None), attached (info set), or reserved (lease None)."""

    __slots__ = ("lease", "token", "info")

    def __init__(self, token):
        self.lease = secrets.token_urlsafe(16)
        self.token = token
        self.info = None


def _matches(expected, presented):
    return bool(presented) and hmac.compare_digest(expected.encode(), presented.encode("utf-8", "replace"))


@implementer(INameStore)
class MemoryNameStore:
    def __init__(self, max_tunnels=None, clock=None, reserve_seconds=RESERVE_SECONDS):
        self.max_tunnels = max_tunnels
        self.reserve_seconds = reserve_seconds
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self._names = {}
        self._leases = {}  # lease -> name
        # name -> deadline; every reservation lasts as long, so this is in deadline order.
        self._reserved = OrderedDict()

    def claim(self, name=None, token=None):
        try:
            return defer.succeed(self._claim(name, token))
        except (NameTaken, RegistryFull) as error:
            return defer.fail(error)

    def attach(self, lease, route_info):
        holding = self._holding(lease)
        if holding is None:
            return defer.fail(LeaseLost(lease))
        holding.info = route_info
        return defer.succeed(None)

    def release(self, lease, reserve=False):
        holding = self._holding(lease)
        if holding is not None:
            self._let_go(self._leases.pop(lease), holding, reserve)
        return defer.succeed(None)

    def lookup(self, name):
        self._forget_expired()
        holding = self._names.get(name)
        if holding is None or holding.lease is None or holding.info is None:
            return defer.succeed(None)
        return defer.succeed(LocalRoute(name, holding.lease, holding.info))

    # Internals.

    def _claim(self, name, token):
        self._forget_expired()
        holding = self._names.get(name) if name is not None else None
        if holding is not None and holding.lease is None and _matches(holding.token, token):
            del self._reserved[name]
            return self._hold(name, holding.token)
        if self.max_tunnels is not None and len(self._names) >= self.max_tunnels:
            raise RegistryFull("the server has reached its tunnel limit")
        if holding is not None:
            raise NameTaken(name)
        if name is None:
            name = self._free_random_name()
        return self._hold(name, secrets.token_urlsafe(24))

    def _hold(self, name, token):
        holding = self._names[name] = _Holding(token)
        self._leases[holding.lease] = name
        return Claim(name, holding.lease, token)

    def _free_random_name(self):
        while True:
            name = names.random_name()
            if name not in self._names:
                return name

    def _holding(self, lease):
        name = self._leases.get(lease)
        return None if name is None else self._names[name]

    def _let_go(self, name, holding, reserve):
        # Only a name whose tunnel was open is worth keeping for its client's return.
        if reserve and holding.info is not None:
            holding.lease = holding.info = None
            self._reserved[name] = self.clock.seconds() + self.reserve_seconds
        else:
            del self._names[name]

    def _forget_expired(self):
        now = self.clock.seconds()
        while self._reserved:
            name, deadline = next(iter(self._reserved.items()))
            if deadline > now:
                break
            del self._reserved[name]
            del self._names[name]
