"""The contract every name store (tpot.server.store.INameStore) must keep.

Subclass `NameStoreContract` in a test module (named Test...) and provide:

- `new_store(max_tunnels=None)`: a fresh, empty store whose reservations last
  `RESERVE_SECONDS`;
- `advance(seconds)`: move the store's own clock on (a memory clock; a Redis store would
  use short TTLs and wait);
- `resolve(d)`, if the store's Deferreds do not fire at once: run until `d` has fired.

tests/unit/test_registry.py runs it against the in-memory store.
"""

import dataclasses

import pytest
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from tests.support.deferreds import outcome
from tpot.protocol.codec import HTTP, TCP
from tpot.protocol.names import valid_name
from tpot.server.store import (
    RESERVE_SECONDS,
    INameStore,
    LeaseLost,
    LocalRoute,
    NameTaken,
    RegistryFull,
    RouteInfo,
)

WEB = RouteInfo(HTTP)
SSH = RouteInfo(TCP, access_secret="s" * 40)


class NameStoreContract:
    def new_store(self, max_tunnels=None):
        raise NotImplementedError

    def advance(self, seconds):
        raise NotImplementedError

    def resolve(self, d):
        return outcome(d)

    # Helpers.

    def ok(self, d):
        result = self.resolve(d)
        assert not isinstance(result, Failure), result.getTraceback()
        return result

    def refused(self, d, exception_type):
        result = self.resolve(d)
        assert isinstance(result, Failure), f"the Deferred succeeded with {result!r}"
        assert result.check(exception_type), result.getTraceback()
        return result.value

    def attached(self, store, name, info=WEB):
        claim = self.ok(store.claim(name))
        assert self.ok(store.attach(claim.lease, info)) is None
        return claim

    def dropped(self, store, name):
        """A name whose open tunnel dropped: released with reserve; its claim."""
        claim = self.attached(store, name)
        self.ok(store.release(claim.lease, reserve=True))
        return claim

    # The interface.

    def test_provides_the_interface(self):
        assert verifyObject(INameStore, self.new_store())

    # Claims and conflicts.

    def test_claim_an_explicit_name(self):
        store = self.new_store()
        claim = self.ok(store.claim("demo"))
        assert claim.name == "demo"
        assert isinstance(claim.lease, str) and claim.lease
        assert isinstance(claim.token, str) and len(claim.token) >= 16
        self.refused(store.claim("demo"), NameTaken)

    def test_claims_are_data(self):
        claim = self.ok(self.new_store().claim("demo"))
        with pytest.raises(dataclasses.FrozenInstanceError):
            claim.name = "other"
        assert claim.token not in repr(claim)  # a secret stays out of logs

    def test_claim_random_names_are_distinct_and_valid(self):
        store = self.new_store()
        claims = [self.ok(store.claim()) for _ in range(200)]
        names = {claim.name for claim in claims}
        assert len(names) == 200
        assert all(valid_name(name) and len(name) == 8 for name in names)
        assert len({claim.lease for claim in claims}) == 200
        assert len({claim.token for claim in claims}) == 200

    def test_random_claim_skips_names_in_use(self, monkeypatch):
        sequence = iter(["taken000", "taken000", "free0000"])
        monkeypatch.setattr("tpot.protocol.names.random_name", lambda: next(sequence))
        store = self.new_store()
        assert self.ok(store.claim()).name == "taken000"
        assert self.ok(store.claim()).name == "free0000"

    def test_random_claim_skips_reserved_names(self, monkeypatch):
        store = self.new_store()
        self.dropped(store, "reserved")
        sequence = iter(["reserved", "free0000"])
        monkeypatch.setattr("tpot.protocol.names.random_name", lambda: next(sequence))
        assert self.ok(store.claim()).name == "free0000"

    # Max tunnels.

    def test_registry_full_counts_claimed_and_attached_names(self):
        store = self.new_store(max_tunnels=2)
        first = self.attached(store, "a")
        self.ok(store.claim())
        self.refused(store.claim("c"), RegistryFull)
        self.refused(store.claim(), RegistryFull)
        self.ok(store.release(first.lease))
        assert self.ok(store.claim("c")).name == "c"

    def test_full_wins_over_taken(self):
        store = self.new_store(max_tunnels=1)
        self.ok(store.claim("a"))
        self.refused(store.claim("a"), RegistryFull)

    def test_reserved_names_count_against_max_tunnels_but_reclaim_when_full(self):
        store = self.new_store(max_tunnels=1)
        claim = self.dropped(store, "wire")
        self.refused(store.claim("other"), RegistryFull)
        self.refused(store.claim(), RegistryFull)
        assert self.ok(store.claim("wire", claim.token)).name == "wire"

    # Attach, lookup, release.

    def test_attach_lookup_release(self):
        store = self.new_store()
        claim = self.ok(store.claim("demo"))
        assert self.ok(store.lookup("demo")) == ()  # claimed but not open yet
        self.ok(store.attach(claim.lease, WEB))
        assert self.ok(store.lookup("demo")) == (LocalRoute("demo", claim.lease, WEB),)
        self.ok(store.release(claim.lease))
        assert self.ok(store.lookup("demo")) == ()
        assert self.ok(store.claim("demo")).name == "demo"

    def test_routes_carry_what_the_router_needs(self):
        store = self.new_store()
        claim = self.attached(store, "ssh", SSH)
        (route,) = self.ok(store.lookup("ssh"))
        assert route.info.kind == TCP and route.info.access_secret == "s" * 40
        assert route.lease == claim.lease
        with pytest.raises(dataclasses.FrozenInstanceError):
            route.info = WEB
        assert "s" * 40 not in repr(route)

    def test_lookup_of_an_unknown_name_has_no_routes(self):
        assert self.ok(self.new_store().lookup("nobody")) == ()

    def test_release_frees_claimed_and_attached_names(self):
        store = self.new_store()
        claimed = self.ok(store.claim("claimed"))
        opened = self.attached(store, "open")
        self.ok(store.release(claimed.lease))
        self.ok(store.release(opened.lease))
        assert self.ok(store.claim("claimed")).name == "claimed"
        assert self.ok(store.claim("open")).name == "open"

    def test_release_of_an_unknown_lease_is_harmless(self):
        store = self.new_store()
        assert self.ok(store.release("no-such-lease")) is None
        assert self.ok(store.release("no-such-lease", reserve=True)) is None

    def test_attach_with_an_unknown_lease_fails(self):
        self.refused(self.new_store().attach("no-such-lease", WEB), LeaseLost)

    # Leases.

    def test_a_stale_lease_cannot_release_a_newer_holder(self):
        store = self.new_store()
        old = self.attached(store, "demo")
        self.ok(store.release(old.lease))
        new = self.attached(store, "demo")
        assert new.lease != old.lease
        self.ok(store.release(old.lease))
        self.ok(store.release(old.lease, reserve=True))
        assert self.ok(store.lookup("demo")) == (LocalRoute("demo", new.lease, WEB),)
        self.refused(store.claim("demo"), NameTaken)
        self.refused(store.attach(old.lease, SSH), LeaseLost)

    def test_a_reclaim_is_a_new_lease_and_the_old_one_is_stale(self):
        store = self.new_store()
        old = self.dropped(store, "wire")
        new = self.ok(store.claim("wire", old.token))
        assert new.lease != old.lease and new.token == old.token  # one token while it is kept
        self.refused(store.attach(old.lease, WEB), LeaseLost)
        self.ok(store.attach(new.lease, WEB))
        self.ok(store.release(old.lease))
        assert self.ok(store.lookup("wire"))[0].lease == new.lease

    # Reservations and reclaim (the reclaim extension).

    def test_release_with_reserve_keeps_the_name_for_its_token(self):
        store = self.new_store()
        claim = self.dropped(store, "wire")
        assert self.ok(store.lookup("wire")) == ()
        self.refused(store.claim("wire"), NameTaken)
        self.refused(store.claim("wire", "not-the-token"), NameTaken)
        self.refused(store.claim("wire", claim.token[:-1]), NameTaken)
        self.refused(store.claim("wire", ""), NameTaken)
        self.advance(RESERVE_SECONDS - 1)
        again = self.ok(store.claim("wire", claim.token))
        assert again.name == "wire"
        # Reclaimed: held again, and no expiry takes the name later.
        self.advance(RESERVE_SECONDS * 2)
        self.refused(store.claim("wire"), NameTaken)
        self.ok(store.attach(again.lease, WEB))
        assert self.ok(store.lookup("wire"))[0].lease == again.lease

    def test_a_refusal_says_how_long_a_dropped_tunnels_name_is_kept(self):
        store = self.new_store()
        self.attached(store, "live")
        assert self.refused(store.claim("live"), NameTaken).held_for is None
        self.dropped(store, "wire")
        self.advance(20)
        held_for = self.refused(store.claim("wire"), NameTaken).held_for
        assert RESERVE_SECONDS - 21 <= held_for <= RESERVE_SECONDS - 20

    def test_a_reserved_name_cannot_be_released_by_its_old_lease(self):
        store = self.new_store()
        claim = self.dropped(store, "wire")
        self.ok(store.release(claim.lease))
        self.refused(store.claim("wire"), NameTaken)
        assert self.ok(store.claim("wire", claim.token)).name == "wire"

    def test_reservation_expires_by_the_store_clock(self):
        store = self.new_store()
        claim = self.dropped(store, "wire")
        self.advance(RESERVE_SECONDS - 1)
        self.refused(store.claim("wire"), NameTaken)
        self.advance(1)
        # Expired: the token no longer means anything and anyone may take the name.
        fresh = self.ok(store.claim("wire"))
        assert fresh.token != claim.token
        self.ok(store.release(fresh.lease))
        assert self.ok(store.claim("wire", claim.token)).token != claim.token

    def test_an_expired_reservation_no_longer_counts_against_max_tunnels(self):
        store = self.new_store(max_tunnels=1)
        self.dropped(store, "wire")
        self.advance(RESERVE_SECONDS)
        assert self.ok(store.claim("other")).name == "other"

    def test_a_token_only_reclaims_its_own_name(self):
        store = self.new_store()
        one = self.dropped(store, "one")
        two = self.dropped(store, "two")
        assert one.token != two.token
        self.refused(store.claim("one", two.token), NameTaken)
        assert self.ok(store.claim("one", one.token)).name == "one"

    def test_a_token_does_not_take_a_name_that_is_open(self):
        store = self.new_store()
        claim = self.attached(store, "wire")
        self.refused(store.claim("wire", claim.token), NameTaken)

    def test_release_without_reserve_frees_the_name_at_once(self):
        store = self.new_store()
        claim = self.attached(store, "wire")
        self.ok(store.release(claim.lease))
        assert self.ok(store.claim("wire")).name == "wire"

    def test_a_claimed_but_never_attached_name_is_not_reserved(self):
        store = self.new_store()
        claim = self.ok(store.claim("wire"))
        self.ok(store.release(claim.lease, reserve=True))
        assert self.ok(store.claim("wire")).name == "wire"

    # Pools: several tunnels, one name.

    def members(self, store, name, count, pool="pool-key", info=WEB):
        claims = [self.ok(store.claim(name, pool=pool)) for _ in range(count)]
        for claim in claims:
            self.ok(store.attach(claim.lease, info))
        return claims

    def leases(self, store, name):
        return {route.lease for route in self.ok(store.lookup(name))}

    def test_a_pool_shares_its_name_and_routes_to_every_member(self):
        store = self.new_store()
        first, second = self.members(store, "shared", 2)
        assert first.name == second.name == "shared" and first.lease != second.lease
        assert first.pool == "pool-key" and "pool-key" not in repr(first)
        assert self.leases(store, "shared") == {first.lease, second.lease}

    def test_a_claim_with_another_pool_key_or_none_on_a_pooled_name_is_taken(self):
        store = self.new_store()
        self.members(store, "shared", 1)
        self.refused(store.claim("shared"), NameTaken)
        self.refused(store.claim("shared", pool="other-key"), NameTaken)

    def test_a_pooled_claim_of_a_name_held_alone_is_taken(self):
        store = self.new_store()
        claim = self.attached(store, "solo")
        self.refused(store.claim("solo", pool="pool-key"), NameTaken)
        self.refused(store.claim("solo", token=claim.token, pool="pool-key"), NameTaken)

    def test_a_member_leaving_removes_only_itself_and_the_last_frees_the_name(self):
        store = self.new_store()
        first, second = self.members(store, "shared", 2)
        self.ok(store.release(first.lease, reserve=True))  # others remain: nothing is reserved
        assert self.leases(store, "shared") == {second.lease}
        self.ok(store.release(first.lease))  # stale now: harmless
        assert self.leases(store, "shared") == {second.lease}
        self.ok(store.release(second.lease))
        assert self.ok(store.lookup("shared")) == ()
        assert self.ok(store.claim("shared")).pool is None  # free for anyone

    def test_a_pool_whose_last_member_dropped_is_kept_for_its_pool_only(self):
        store = self.new_store()
        (member,) = self.members(store, "shared", 1)
        self.ok(store.release(member.lease, reserve=True))
        assert self.ok(store.lookup("shared")) == ()
        self.refused(store.claim("shared"), NameTaken)
        self.refused(store.claim("shared", token=member.token), NameTaken)
        self.refused(store.claim("shared", pool="other-key"), NameTaken)
        back = self.ok(store.claim("shared", pool="pool-key"))
        assert back.name == "shared" and back.lease != member.lease
        self.ok(store.attach(back.lease, WEB))
        assert self.leases(store, "shared") == {back.lease}

    def test_a_pool_reservation_expires_like_any_other(self):
        store = self.new_store()
        (member,) = self.members(store, "shared", 1)
        self.ok(store.release(member.lease, reserve=True))
        self.advance(RESERVE_SECONDS + 1)
        assert self.ok(store.claim("shared")).pool is None

    def test_every_member_counts_against_max_tunnels(self):
        store = self.new_store(max_tunnels=2)
        self.members(store, "shared", 2)
        self.refused(store.claim("shared", pool="pool-key"), RegistryFull)

    def test_only_attached_members_are_routed(self):
        store = self.new_store()
        (open_member,) = self.members(store, "shared", 1)
        self.ok(store.claim("shared", pool="pool-key"))  # still opening
        assert self.leases(store, "shared") == {open_member.lease}
