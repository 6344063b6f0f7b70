"""The in-memory TunnelRegistry, subdomain names, and conversation id allocation."""

import random
import re

import pytest

from tests.support.deferreds import failed, succeeded
from tpot.protocol.codec import MAX_CONVERSATION_ID
from tpot.protocol.names import random_name, valid_name
from tpot.server.registry import ITunnelRegistry, NameTaken, RegistryFull, TunnelRegistry
from tpot.protocol.session import ConversationIds


class FakeTunnel:
    def __init__(self):
        self.shut_down = False

    def shutdown(self):
        self.shut_down = True


def claim(registry, name=None):
    return succeeded(registry.claim(name))


def lookup(registry, name):
    return succeeded(registry.lookup(name))


def test_provides_the_interface():
    assert ITunnelRegistry.providedBy(TunnelRegistry())


def test_claim_an_explicit_name():
    registry = TunnelRegistry()
    assert claim(registry, "demo") == "demo"
    assert failed(registry.claim("demo"), NameTaken)


def test_claim_random_names_are_distinct_and_valid():
    registry = TunnelRegistry()
    names = {claim(registry) for _ in range(200)}
    assert len(names) == 200
    assert all(valid_name(name) and len(name) == 8 for name in names)


def test_random_claim_skips_names_in_use(monkeypatch):
    sequence = iter(["taken000", "taken000", "free0000"])
    monkeypatch.setattr("tpot.protocol.names.random_name", lambda: next(sequence))
    registry = TunnelRegistry()
    assert claim(registry) == "taken000"
    assert claim(registry) == "free0000"


def test_registry_full_counts_claimed_and_attached_names():
    registry = TunnelRegistry(max_tunnels=2)
    claim(registry, "a")
    registry.attach("a", FakeTunnel())
    claim(registry)
    failed(registry.claim("c"), RegistryFull)
    failed(registry.claim(), RegistryFull)
    registry.release("a")
    assert claim(registry, "c") == "c"


def test_full_wins_over_taken():
    registry = TunnelRegistry(max_tunnels=1)
    claim(registry, "a")
    failed(registry.claim("a"), RegistryFull)


def test_attach_lookup_release():
    registry, tunnel = TunnelRegistry(), FakeTunnel()
    claim(registry, "demo")
    assert lookup(registry, "demo") is None  # claimed but not open yet
    assert registry.active_tunnels() == 0
    registry.attach("demo", tunnel)
    assert lookup(registry, "demo") is tunnel
    assert registry.active_tunnels() == 1
    registry.release("demo", tunnel)
    assert lookup(registry, "demo") is None
    assert registry.active_tunnels() == 0
    assert claim(registry, "demo") == "demo"


def test_lookup_of_an_unknown_name_is_none():
    assert lookup(TunnelRegistry(), "nobody") is None


def test_release_by_another_tunnel_keeps_the_name():
    registry, owner, stranger = TunnelRegistry(), FakeTunnel(), FakeTunnel()
    claim(registry, "demo")
    registry.attach("demo", owner)
    registry.release("demo", stranger)
    assert lookup(registry, "demo") is owner
    failed(registry.claim("demo"), NameTaken)


def test_release_without_tunnel_frees_claimed_and_attached_names():
    registry = TunnelRegistry()
    claim(registry, "claimed")
    claim(registry, "open")
    registry.attach("open", FakeTunnel())
    registry.release("claimed")
    registry.release("open")
    assert claim(registry, "claimed") == "claimed"
    assert claim(registry, "open") == "open"


def test_release_of_an_unknown_name_is_harmless():
    registry = TunnelRegistry()
    registry.release("ghost")
    registry.release("ghost", FakeTunnel())
    assert registry.active_tunnels() == 0


def test_shutdown_tunnels_closes_attached_tunnels_only():
    registry, first, second = TunnelRegistry(), FakeTunnel(), FakeTunnel()
    for name, tunnel in (("a", first), ("b", second)):
        claim(registry, name)
        registry.attach(name, tunnel)
    claim(registry, "pending")
    registry.shutdown_tunnels()
    assert first.shut_down and second.shut_down


def test_stop_service_leaves_tunnels_to_the_drain():
    registry, tunnel = TunnelRegistry(), FakeTunnel()
    claim(registry, "a")
    registry.attach("a", tunnel)
    registry.startService()
    registry.stopService()
    assert not tunnel.shut_down


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
