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


class _Name:
    """One name: held by its members (lease -> RouteInfo, None until attached; one member
    unless pooled), or reserved (no members) until a deadline kept in MemoryNameStore."""

    __slots__ = ("token", "pool", "members")

    def __init__(self, token, pool):
        self.token = token
        self.pool = pool
        self.members = {}

    def may_reclaim(self, token, pool):
        if self.pool is not None:
            return self.pool == pool
        return pool is None and _matches(self.token, token)


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

    def claim(self, name=None, token=None, pool=None):
        try:
            return defer.succeed(self._claim(name, token, pool))
        except (NameTaken, RegistryFull) as error:
            return defer.fail(error)

    def attach(self, lease, route_info):
        entry = self._entry(lease)
        if entry is None:
            return defer.fail(LeaseLost(lease))
        entry.members[lease] = route_info
        return defer.succeed(None)

    def release(self, lease, reserve=False):
        entry = self._entry(lease)
        if entry is not None:
            self._leave(self._leases.pop(lease), entry, lease, reserve)
        return defer.succeed(None)

    def lookup(self, name):
        self._forget_expired()
        entry = self._names.get(name)
        members = () if entry is None else entry.members.items()
        return defer.succeed(tuple(LocalRoute(name, lease, info) for lease, info in members if info is not None))

    # Internals.

    def _claim(self, name, token, pool):
        self._forget_expired()
        entry = self._names.get(name) if name is not None else None
        if entry is not None and name in self._reserved and entry.may_reclaim(token, pool):
            del self._reserved[name]
            return self._join(name, entry)
        if self.max_tunnels is not None and len(self._leases) + len(self._reserved) >= self.max_tunnels:
            raise RegistryFull("the server has reached its tunnel limit")
        if entry is not None and entry.members and pool is not None and entry.pool == pool:
            return self._join(name, entry)
        if entry is not None:
            deadline = self._reserved.get(name)
            raise NameTaken(name, None if deadline is None else deadline - self.clock.seconds())
        if name is None:
            name = self._free_random_name()
        entry = self._names[name] = _Name(secrets.token_urlsafe(24), pool)
        return self._join(name, entry)

    def _join(self, name, entry):
        lease = secrets.token_urlsafe(16)
        entry.members[lease] = None
        self._leases[lease] = name
        return Claim(name, lease, entry.token, entry.pool)

    def _free_random_name(self):
        while True:
            name = names.random_name()
            if name not in self._names:
                return name

    def _entry(self, lease):
        name = self._leases.get(lease)
        return None if name is None else self._names[name]

    def _leave(self, name, entry, lease, reserve):
        attached = entry.members.pop(lease) is not None
        if entry.members:
            return
        # Only a name whose tunnel was open is worth keeping for its client's return.
        if reserve and attached:
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
