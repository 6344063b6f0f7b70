"""The name store and the tunnel table, subdomain names, and conversation id allocation."""

import random
import re

import pytest
from twisted.internet import task
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support.deferreds import succeeded
from tests.support.store_contract import WEB, NameStoreContract
from tpot.protocol.codec import MAX_CONVERSATION_ID
from tpot.protocol.names import random_name, valid_name
from tpot.protocol.session import ConversationIds
from tpot.server.memory_store import MemoryNameStore
from tpot.server.store import RESERVE_SECONDS, Claim, LocalRoute, NameTaken
from tpot.server.table import ILiveTunnel, ITunnelCounts, ITunnelTable, TunnelTable
from tpot.server.tunnel import TunnelProtocol


class TestMemoryNameStore(NameStoreContract):
    @pytest.fixture(autouse=True)
    def _clock(self):
        self.clock = task.Clock()

    def new_store(self, max_tunnels=None):
        return MemoryNameStore(max_tunnels=max_tunnels, clock=self.clock)

    def advance(self, seconds):
        self.clock.advance(seconds)

    # Beyond the contract: what only the in-memory store promises.

    def test_reservations_expire_to_the_millisecond_and_leave_no_timers(self):
        store = self.new_store()
        self.dropped(store, "wire")
        assert not self.clock.getDelayedCalls()  # compared when asked: nothing to cancel at exit
        self.advance(RESERVE_SECONDS - 0.001)
        self.refused(store.claim("wire"), NameTaken)
        self.advance(0.001)
        assert self.ok(store.claim("wire")).name == "wire"
        assert not self.clock.getDelayedCalls()

    def test_a_reclaim_leaves_no_timers(self):
        store = self.new_store()
        claim = self.dropped(store, "wire")
        self.ok(store.claim("wire", claim.token))
        assert not self.clock.getDelayedCalls()

    def test_expired_reservations_are_forgotten(self):
        store = self.new_store()
        for name in ("a", "b", "c"):
            self.dropped(store, name)
        self.advance(RESERVE_SECONDS)
        self.ok(store.lookup("z"))
        assert store._names == {} and store._leases == {} and not store._reserved


# The node-local tunnel table.


@implementer(ILiveTunnel)
class FakeTunnel:
    count = 0

    def __init__(self, conversations=0, name=None):
        FakeTunnel.count += 1
        self.claim = Claim(name or f"fake{FakeTunnel.count}", f"lease-of-fake{FakeTunnel.count}", "token")
        self.conversations = dict.fromkeys(range(conversations))
        self.shut_down = False
        self.lost = False

    def route_info(self):
        return WEB

    def shutdown(self):
        self.shut_down = True

    def name_lost(self):
        self.lost = True


def test_fakes_and_tunnels_provide_the_interfaces():
    assert verifyObject(ITunnelTable, TunnelTable())
    assert verifyObject(ITunnelCounts, TunnelTable())
    assert verifyObject(ILiveTunnel, FakeTunnel())
    assert ILiveTunnel.implementedBy(TunnelProtocol)


def test_table_add_get_remove_and_counts():
    table, one, two = TunnelTable(), FakeTunnel(conversations=2), FakeTunnel(conversations=3)
    assert table.active_tunnels() == table.active_conversations() == 0
    table.add("lease-1", one)
    table.add("lease-2", two)
    assert table.get("lease-1") is one and table.get("lease-2") is two
    assert table.get("lease-3") is None
    assert (table.active_tunnels(), table.active_conversations()) == (2, 5)
    table.remove("lease-1")
    table.remove("lease-1")  # harmless twice
    table.remove("no-such-lease")
    assert table.get("lease-1") is None
    assert (table.active_tunnels(), table.active_conversations()) == (1, 3)
    assert table.tunnels() == [two]


def test_the_table_routes_by_name_for_when_the_registry_is_away():
    table, tunnel = TunnelTable(), FakeTunnel(name="demo")
    table.add("lease-1", tunnel)
    assert table.routes("demo") == (LocalRoute("demo", "lease-1", WEB),)
    assert table.routes("other") == ()
    replaced = FakeTunnel(name="demo")  # its reclaim, opened before the old one's close was seen
    table.add("lease-2", replaced)
    table.remove("lease-1")
    assert table.routes("demo") == (LocalRoute("demo", "lease-2", WEB),)
    table.remove("lease-2")
    assert table.routes("demo") == ()


def test_the_table_routes_to_every_member_of_a_pool_here():
    table = TunnelTable()
    table.add("lease-1", FakeTunnel(name="pool"))
    table.add("lease-2", FakeTunnel(name="pool"))
    assert [route.lease for route in table.routes("pool")] == ["lease-1", "lease-2"]
    table.remove("lease-1")
    assert [route.lease for route in table.routes("pool")] == ["lease-2"]


def test_shutdown_tunnels_closes_every_tunnel_of_the_table():
    table, first, second = TunnelTable(), FakeTunnel(), FakeTunnel()
    table.add("a", first)
    table.add("b", second)
    table.shutdown_tunnels()
    assert first.shut_down and second.shut_down


def test_shutdown_tunnels_survives_tunnels_leaving_the_table_as_they_close():
    table = TunnelTable()

    @implementer(ILiveTunnel)
    class LeavingTunnel(FakeTunnel):
        def shutdown(self):
            super().shutdown()
            table.remove(self.lease)

    tunnels = [LeavingTunnel() for _ in range(3)]
    for i, tunnel in enumerate(tunnels):
        tunnel.lease = f"lease-{i}"
        table.add(tunnel.lease, tunnel)
    table.shutdown_tunnels()
    assert all(tunnel.shut_down for tunnel in tunnels) and table.active_tunnels() == 0


def test_store_and_table_together_route_to_the_live_tunnel():
    store, table, tunnel = MemoryNameStore(clock=task.Clock()), TunnelTable(), FakeTunnel()
    claim = succeeded(store.claim("demo"))
    table.add(claim.lease, tunnel)
    succeeded(store.attach(claim.lease, WEB))
    assert table.get(succeeded(store.lookup("demo"))[0].lease) is tunnel


# Names.


@pytest.mark.parametrize("name", ["a", "0", "demo", "my-app", "a--b", "9lives", "a" * 24, "z" * 23 + "0"])
def test_valid_names(name):
    assert valid_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "-a", "-", "a-", "z" * 23 + "-", "xn--80ak6aa92e", "ab--c", "A", "Demo", "a_b", "a.b", "a b", "a" * 25,
     "a\n", "\na", "é", "ａ", "a/b", "*"],
)
def test_invalid_names(name):
    assert not valid_name(name)


def test_random_name_is_8_base36_characters():
    names = [random_name() for _ in range(500)]
    assert all(re.fullmatch(r"[0-9a-z]{8}", name) for name in names)
    assert len(set(names)) == len(names)
    assert set("".join(names)) == set("0123456789abcdefghijklmnopqrstuvwxyz")


# Conversation ids.


def test_ids_start_at_1_and_go_round_robin():
    ids = ConversationIds()
    assert [ids.allocate() for _ in range(5)] == [1, 2, 3, 4, 5]
    assert len(ids) == 5


def test_a_freed_id_is_not_reused_at_once():
    ids = ConversationIds(maximum=5)
    assert [ids.allocate() for _ in range(3)] == [1, 2, 3]
    ids.release(2)
    assert ids.allocate() == 4
    assert ids.allocate() == 5
    assert ids.allocate() == 2  # wrapped round to the freed id
    assert ids.allocate() is None


def test_wrap_around_skips_ids_in_use():
    ids = ConversationIds(maximum=4)
    assert [ids.allocate() for _ in range(4)] == [1, 2, 3, 4]
    ids.release(1)
    ids.release(3)
    assert [ids.allocate(), ids.allocate(), ids.allocate()] == [1, 3, None]


def test_full_returns_none_until_an_id_is_released():
    ids = ConversationIds(maximum=3)
    assert [ids.allocate() for _ in range(3)] == [1, 2, 3]
    assert ids.allocate() is None
    assert ids.allocate() is None
    ids.release(2)
    assert ids.allocate() == 2
    assert ids.allocate() is None


def test_releasing_an_unknown_id_is_harmless():
    ids = ConversationIds(maximum=2)
    ids.release(7)
    assert [ids.allocate(), ids.allocate()] == [1, 2]


def test_default_ids_stay_within_1_to_32767():
    ids = ConversationIds()
    allocated = [ids.allocate() for _ in range(MAX_CONVERSATION_ID)]
    assert allocated == list(range(1, MAX_CONVERSATION_ID + 1))
    assert ids.allocate() is None
    ids.release(12345)
    assert ids.allocate() == 12345


@pytest.mark.parametrize("seed", range(5))
def test_never_hands_out_an_id_in_use_and_reuses_freed_ids_last(seed):
    """Against a model: each id is the first free one after the previously allocated id."""
    rng, maximum = random.Random(seed), 16
    ids, in_use, previous = ConversationIds(maximum=maximum), set(), 0
    for _ in range(3000):
        if in_use and rng.random() < 0.45:
            freed = rng.choice(sorted(in_use))
            in_use.discard(freed)
            ids.release(freed)
            continue
        new = ids.allocate()
        if len(in_use) == maximum:
            assert new is None
            continue
        following = [(previous + step - 1) % maximum + 1 for step in range(1, maximum + 1)]
        assert new == next(i for i in following if i not in in_use)
        in_use.add(new)
        previous = new
        assert len(ids) == len(in_use)
