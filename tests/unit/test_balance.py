"""Which member of a pool a new visitor connection goes to (tpot.server.balance)."""

from collections import Counter

from tpot.protocol.codec import HTTP
from tpot.server.balance import Balancer
from tpot.server.store import LocalRoute, RemoteRoute, RouteInfo

WEB = RouteInfo(HTTP)


def routes(name, *leases):
    return tuple(LocalRoute(name, lease, WEB) for lease in leases)


def test_none_or_one_route_needs_no_choice():
    balancer = Balancer(load=lambda route: 1 / 0)  # never asked
    assert balancer.pick(()) is None
    (only,) = routes("solo", "a")
    assert balancer.pick((only,)) is only


def test_the_member_with_the_fewest_open_conversations_wins():
    loads = {"a": 3, "b": 1, "c": 2}
    balancer = Balancer(load=lambda route: loads[route.lease])
    assert balancer.pick(routes("pool", "a", "b", "c")).lease == "b"


def test_tied_members_take_turns_whatever_order_the_store_gives():
    balancer = Balancer(load=lambda route: 0)
    picks = Counter()
    for turn in range(300):
        members = routes("pool", "a", "b", "c")
        picks[balancer.pick(members[turn % 3:] + members[:turn % 3]).lease] += 1
    assert picks == {"a": 100, "b": 100, "c": 100}


def test_turns_are_counted_per_name():
    balancer = Balancer(load=lambda route: 0)
    first = [balancer.pick(routes("one", "a", "b")).lease for _ in range(2)]
    assert balancer.pick(routes("two", "x", "y")).lease == "x"
    assert first == ["a", "b"]


def test_only_the_least_loaded_take_turns():
    loads = {"a": 0, "b": 0, "c": 5}
    balancer = Balancer(load=lambda route: loads[route.lease])
    assert {balancer.pick(routes("pool", "a", "b", "c")).lease for _ in range(10)} == {"a", "b"}


def test_remote_members_are_chosen_like_local_ones():
    remote = RemoteRoute("pool", "node-b", WEB, "address", "r")
    (local,) = routes("pool", "l")
    loads = {"l": 2, "r": 0}
    assert Balancer(load=lambda route: loads[route.lease]).pick((local, remote)) is remote


def test_the_turns_of_only_so_many_names_are_remembered():
    balancer = Balancer(load=lambda route: 0, remembered=2)
    for name in ("one", "two", "three"):
        balancer.pick(routes(name, "a", "b"))
    assert len(balancer._turns) == 2
    assert balancer.pick(routes("one", "a", "b")).lease == "a"  # forgotten: starts again
    assert balancer.pick(routes("three", "a", "b")).lease == "b"
