"""What any name store is: `INameStore`, the claims and routes it hands out, its refusals.

The name store says who holds which tunnel name and where its tunnel runs.  Every call
returns a Deferred, and everything it returns is data (frozen dataclasses, no live
objects), so a store shared by several nodes (Redis, a later issue) can stand in for the
in-memory one (tpot.server.memory_store) without changing its callers.  The live tunnel
objects of this node are kept apart, in tpot.server.table.
"""

from dataclasses import dataclass, field

from zope.interface import Interface

# How long a dropped tunnel's name waits for its client to come back (reclaim extension).
RESERVE_SECONDS = 60


class NameTaken(Exception):
    """The name is held by another tunnel; `held_for`: the seconds left of the reservation
    kept for a dropped tunnel's client (None while a tunnel holds it)."""

    def __init__(self, name, held_for=None):
        super().__init__(name)
        self.held_for = held_for


class RegistryFull(Exception):
    """No more tunnels may be opened here."""


class RegistryUnavailable(Exception):
    """The store cannot be reached (a shared store's server is down); nothing changed."""


class LeaseLost(Exception):
    """The lease no longer holds its name (released, or expired in the store)."""


@dataclass(frozen=True)
class Claim:
    """A name held for a tunnel about to open.

    `lease` identifies this holding: only it can attach or release the name, so a tunnel
    that has gone cannot release the name of the one that took it back.  `token` is the
    reclaim token (docs/PROTOCOL.md, `reclaim`); it stays the same across reclaims.  `pool`
    is the pool key (tpot.server.requests.pool_key) of a name that several tunnels share, and
    None for a name held alone.
    """

    name: str
    lease: str
    token: str = field(repr=False)
    pool: str = field(default=None, repr=False)


@dataclass(frozen=True)
class RouteInfo:
    """What a node needs to route to a tunnel without asking the tunnel object.

    A shared store keeps the TCP tunnel's access secret so that any node can check a
    /connect-tpot proof; it is the tunnel's own random secret, never the server's key.
    """

    kind: str
    access_secret: str = field(default=None, repr=False)


@dataclass(frozen=True)
class LocalRoute:
    """`name` is served on this node, by the tunnel attached under `lease` (tpot.server.table)."""

    name: str
    lease: str
    info: RouteInfo


@dataclass(frozen=True)
class RemoteRoute:
    """`name` is served by a tunnel on another node, reached at `address` (as that node
    signed it, tpot.server.cluster.hop.signed_address), attached there under `lease`."""

    name: str
    node: str
    info: RouteInfo
    address: str = ""
    lease: str = ""


class INameStore(Interface):
    def claim(name=None, token=None, pool=None):
        """Hold `name`, or a random name not in use if None, for a tunnel about to open.

        A name reserved after its tunnel dropped goes only to a claim carrying its reclaim
        token.  With a `pool` key the name is shared: a claim with the same key joins the
        tunnels holding it (each member has its own lease) or takes it back from its
        reservation, whatever its token; a claim with another key, or none, is NameTaken, as
        is a pooled claim of a name held alone.  Returns a Deferred firing with a Claim, or
        failing with NameTaken or RegistryFull (full wins over taken; a reclaim is never
        refused as full; every member counts as a tunnel).
        """

    def attach(lease, route_info):
        """Route visitors of the lease's name to its tunnel, described by a RouteInfo.

        Returns a Deferred firing with None, or failing with LeaseLost.  Every call may
        also fail with RegistryUnavailable when a shared store cannot be reached.
        """

    def release(lease, reserve=False):
        """Give the lease's name back; a stale lease changes nothing.

        A member of a pool leaves it; the name goes with its last member.  With `reserve`,
        an attached name stays reserved for its reclaim token (or its pool key) for
        RESERVE_SECONDS, by the store's own clock.  Returns a Deferred firing with None.
        """

    def lookup(name):
        """A Deferred firing with the routes (LocalRoute or RemoteRoute) of the tunnels
        attached under `name`: one for a name held alone, one per open member of a pool,
        none (an empty tuple) if the name is free, claimed but not open, or reserved."""
