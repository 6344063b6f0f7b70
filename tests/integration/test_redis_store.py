"""The Redis name store against a real redis-server: the store contract, and what only a
shared store promises (one name space for several nodes, per-node limits, routes to other
nodes, nothing secret in the clear)."""

import pytest
from twisted.internet import task

from tests.integration.conftest import resolve
from tests.support.store_contract import SSH, WEB, NameStoreContract
from tpot.server.cluster.redis_store import RedisNameStore, parse_redis_url, token_hash
from tpot.server.store import (
    RESERVE_SECONDS,
    LocalRoute,
    NameTaken,
    RegistryFull,
    RegistryUnavailable,
    RemoteRoute,
)


class TestRedisNameStore(NameStoreContract):
    @pytest.fixture(autouse=True)
    def _redis(self, redis):
        self.redis = redis
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)  # the epoch-based clock of a real node

    def new_store(self, max_tunnels=None, node="node-a", ttl=10**7):
        """A node's store, alive (for as long as the contract's clock runs, by default)."""
        store = RedisNameStore(self.redis, node, max_tunnels=max_tunnels, clock=self.clock)
        self.ok(store.beat(f"{node}.example:3001 proof", ttl))
        return store

    def advance(self, seconds):
        self.clock.advance(seconds)

    def resolve(self, d):
        return resolve(d)

    # Beyond the contract: several nodes on one Redis.

    def test_a_name_is_unique_across_nodes(self):
        a, b = self.new_store(node="node-a"), self.new_store(node="node-b")
        self.attached(a, "demo")
        self.refused(b.claim("demo"), NameTaken)
        random_names = {self.ok(b.claim()).name for _ in range(20)}
        assert "demo" not in random_names

    def test_routes_say_which_node_serves_the_name(self):
        a, b = self.new_store(node="node-a"), self.new_store(node="node-b")
        claim = self.attached(a, "ssh", SSH)
        assert self.ok(a.lookup("ssh")) == (LocalRoute("ssh", claim.lease, SSH),)
        assert self.ok(b.lookup("ssh")) == (RemoteRoute("ssh", "node-a", SSH, "node-a.example:3001 proof", claim.lease),)

    def test_max_tunnels_is_per_node(self):
        a, b = self.new_store(max_tunnels=1, node="node-a"), self.new_store(max_tunnels=1, node="node-b")
        self.attached(a, "one")
        self.refused(a.claim("two"), RegistryFull)
        assert self.ok(b.claim("two")).name == "two"

    def test_a_name_reserved_on_one_node_is_reclaimed_on_another(self):
        a, b = self.new_store(max_tunnels=1, node="node-a"), self.new_store(max_tunnels=1, node="node-b")
        old = self.dropped(a, "wire")
        new = self.ok(b.claim("wire", old.token))
        self.ok(b.attach(new.lease, WEB))
        assert self.ok(a.lookup("wire")) == (RemoteRoute("wire", "node-b", WEB, "node-b.example:3001 proof", new.lease),)
        assert self.ok(a.claim("other")).name == "other"  # node a no longer counts it

    def test_two_nodes_claiming_one_name_at_once_give_it_to_one(self):
        stores = [self.new_store(node=f"node-{i}") for i in range(8)]
        pending = [store.claim("race") for store in stores]
        results = [resolve(d) for d in pending]
        assert sum(not hasattr(result, "check") for result in results) == 1
        assert all(result.check(NameTaken) for result in results if hasattr(result, "check"))

    def test_redis_holds_no_reclaim_token(self):
        store = self.new_store()
        claim = self.dropped(store, "wire")
        keys = self.ok(self.redis.keys("*"))
        values = []
        for key in keys:
            kind = self.ok(self.redis.type(key))
            if kind == "hash":
                values += self.ok(self.redis.hvals(key))
            elif kind == "string":
                values.append(self.ok(self.redis.get(key)))
        assert claim.token not in " ".join(map(str, values))
        assert token_hash(claim.token) in values

    # Liveness: a node that stops beating.

    def test_a_dead_nodes_names_route_nowhere_and_wait_for_their_tokens(self):
        a, b = self.new_store(node="node-a", ttl=5), self.new_store(node="node-b")
        claim = self.attached(a, "wire")
        self.advance(5)  # node a's entry expires: it stopped beating
        assert self.ok(b.lookup("wire")) == ()
        self.refused(b.claim("wire"), NameTaken)  # reserved for its client
        self.refused(b.claim("wire", "not-the-token"), NameTaken)
        reclaimed = self.ok(b.claim("wire", claim.token))
        assert reclaimed.token == claim.token
        self.ok(b.attach(reclaimed.lease, WEB))
        assert self.ok(b.lookup("wire")) == (LocalRoute("wire", reclaimed.lease, WEB),)

    def test_a_dead_nodes_reservation_counts_from_its_last_beat(self):
        a, b = self.new_store(node="node-a", ttl=5), self.new_store(node="node-b")
        self.attached(a, "wire")
        self.advance(5 + RESERVE_SECONDS)
        assert self.ok(b.claim("wire")).name == "wire"

    def test_beats_handle_dead_nodes_and_count_the_cluster(self):
        a, b = self.new_store(node="node-a", ttl=5), self.new_store(node="node-b")
        for name in ("one", "two"):
            self.attached(a, name)
        self.attached(b, "three")
        beat = self.ok(b.beat("node-b.example:3001 proof", 10**7))
        assert (beat.was_alive, beat.nodes, beat.tunnels) == (True, 2, 3)
        self.advance(5)
        beat = self.ok(b.beat("node-b.example:3001 proof", 10**7))
        assert (beat.nodes, beat.tunnels) == (1, 1)
        assert self.ok(self.redis.hget("tpot:n:one", "st")) == "r"  # reserved by the beat, unasked
        self.advance(RESERVE_SECONDS)
        self.ok(b.beat("node-b.example:3001 proof", 10**7))
        assert not self.ok(self.redis.exists("tpot:n:one"))
        assert self.ok(self.redis.zscore("tpot:nodes", "node-a")) is None  # nothing of node a is left

    def test_a_node_that_comes_back_is_alive_again(self):
        a = self.new_store(node="node-a", ttl=5)
        self.advance(6)
        assert not self.ok(a.beat("node-a.example:3001 proof", 5)).was_alive
        assert self.ok(a.beat("node-a.example:3001 proof", 5)).was_alive

    # Writing back what Redis lost.

    def test_sync_writes_back_the_tunnels_of_a_node_after_redis_lost_them(self):
        a, b = self.new_store(node="node-a"), self.new_store(node="node-b")
        web, ssh = self.attached(a, "web"), self.attached(a, "ssh", SSH)
        self.ok(self.redis.flushdb())  # a Redis restarted without persistence
        beat = self.ok(a.beat("node-a.example:3001 proof", 10**7))
        assert not beat.was_alive
        self.ok(b.beat("node-b.example:3001 proof", 10**7))
        assert self.ok(a.sync([(web, WEB), (ssh, SSH)])) == []
        assert self.ok(a.lookup("web")) == (LocalRoute("web", web.lease, WEB),)
        assert self.ok(b.lookup("ssh")) == (RemoteRoute("ssh", "node-a", SSH, "node-a.example:3001 proof", ssh.lease),)
        self.refused(b.claim("web"), NameTaken)
        self.ok(a.release(web.lease))  # the lease works as before
        assert self.ok(b.claim("web")).name == "web"

    def test_sync_gives_up_names_others_took_meanwhile_and_reserves_stale_ones(self):
        a, b = self.new_store(node="node-a"), self.new_store(node="node-b")
        web, stale = self.attached(a, "web"), self.attached(a, "stale")
        self.ok(self.redis.flushdb())
        self.ok(b.beat("node-b.example:3001 proof", 10**7))
        self.attached(b, "web")  # taken on node b while node a could not write
        self.ok(a.beat("node-a.example:3001 proof", 10**7))
        # Claimed and attached again on node a, then the tunnel dropped: nothing serves it.
        again = self.ok(a.claim("stale"))
        self.ok(self.redis.hset(f"tpot:lease:{again.lease}", "kind", "http"))
        assert self.ok(a.sync([(web, WEB)])) == ["web"]
        assert self.ok(a.lookup("stale")) == ()
        assert self.ok(self.redis.hget("tpot:n:stale", "st")) == "r"
        assert stale.name == "stale"

    # Pools across nodes.

    def test_members_of_a_pool_on_several_nodes_are_routed_from_any(self):
        a, b = self.new_store(node="node-a"), self.new_store(node="node-b")
        (here,) = self.members(a, "shared", 1)
        (there,) = self.members(b, "shared", 1)
        assert set(self.ok(a.lookup("shared"))) == {
            LocalRoute("shared", here.lease, WEB),
            RemoteRoute("shared", "node-b", WEB, "node-b.example:3001 proof", there.lease),
        }
        self.refused(b.claim("shared", pool="other-key"), NameTaken)

    def test_the_members_of_a_dead_node_leave_the_pool_and_the_rest_serve_it(self):
        a = self.new_store(node="node-a")
        b = self.new_store(node="node-b", ttl=5)
        (here,) = self.members(a, "shared", 1)
        self.members(b, "shared", 2)
        self.advance(6)  # node b's heartbeat expired
        assert self.leases(a, "shared") == {here.lease}
        self.ok(a.beat("node-a.example:3001 proof", 10**7))  # handles node b's members
        assert self.ok(self.redis.scard("tpot:m:shared")) == 1
        self.ok(a.release(here.lease, reserve=True))
        self.refused(a.claim("shared"), NameTaken)  # the last member's drop keeps it for the pool
        assert self.ok(a.claim("shared", pool="pool-key")).name == "shared"

    def test_a_pool_whose_only_node_died_is_kept_for_its_pool(self):
        b = self.new_store(node="node-b", ttl=5)
        self.members(b, "shared", 2)
        self.advance(6)
        a = self.new_store(node="node-a")
        self.refused(a.claim("shared"), NameTaken)
        assert self.ok(a.claim("shared", pool="pool-key")).name == "shared"

    def test_sync_writes_back_pool_members_and_joins_the_pool_others_kept(self):
        a, b = self.new_store(node="node-a"), self.new_store(node="node-b")
        (mine,) = self.members(a, "shared", 1)
        self.ok(self.redis.flushdb())
        self.ok(b.beat("node-b.example:3001 proof", 10**7))
        (theirs,) = self.members(b, "shared", 1)  # the pool went on on node b meanwhile
        self.ok(a.beat("node-a.example:3001 proof", 10**7))
        assert self.ok(a.sync([(mine, WEB)])) == []
        assert self.leases(b, "shared") == {mine.lease, theirs.lease}

    # Redis unreachable.

    def test_without_a_connection_every_call_fails_at_once(self):
        store = RedisNameStore(None, "node-a", clock=self.clock)
        for d in (store.claim("x"), store.attach("l", WEB), store.release("l"), store.lookup("x"),
                  store.beat("a proof", 5), store.sync([])):
            self.refused(d, RegistryUnavailable)

    def test_reservations_need_no_timers(self):
        store = self.new_store()
        self.dropped(store, "wire")
        assert not self.clock.getDelayedCalls()
        self.advance(RESERVE_SECONDS)
        assert self.ok(store.claim("wire")).name == "wire"


@pytest.mark.parametrize("url, expected", [
    ("redis://localhost", {"host": "localhost", "port": 6379, "dbid": 0, "password": None}),
    ("redis://:s3cret@10.0.0.5:6380/2", {"host": "10.0.0.5", "port": 6380, "dbid": 2, "password": "s3cret"}),
    ("rediss://user:p%40ss@redis.example:6390", {"username": "user", "password": "p@ss", "ssl_context_factory": True}),
])
def test_redis_urls(url, expected):
    parsed = parse_redis_url(url)
    assert {key: parsed[key] for key in expected} == expected


@pytest.mark.parametrize("url", ["", "localhost:6379", "http://localhost", "redis://", "redis://h:port", "redis://h/x"])
def test_bad_redis_urls_say_what_to_use(url):
    with pytest.raises(ValueError, match="Redis URL"):
        parse_redis_url(url)


def test_a_member_whose_lease_hash_is_gone_holds_nothing(redis):
    clock = task.Clock()
    clock.advance(1_800_000_000)
    store = RedisNameStore(redis, "node-a", clock=clock)
    resolve(store.beat("node-a.example:3001 proof", 10**7))
    claim = resolve(store.claim("lost"))
    resolve(redis.delete(f"tpot:lease:{claim.lease}"))  # evicted, or deleted by hand
    assert resolve(store.claim("lost")).name == "lost"
