"""A node's heartbeat against a real redis-server: what it writes back, and when."""

from twisted.internet import task

from tests.integration.conftest import resolve
from tests.support.store_contract import WEB
from tpot.server.cluster.heartbeat import Heartbeat
from tpot.server.cluster.redis_store import RedisNameStore
from tpot.server.store import NameTaken
from tpot.server.table import TunnelTable

SECRET = "heartbeat-test-secret-0123456789abcdef"


def node(redis, clock, node_id="node-a"):
    store = RedisNameStore(redis, node_id, clock=clock)
    return store, Heartbeat(store, TunnelTable(), SECRET, f"{node_id}.example:3001", clock, ttl=10)


def epoch_clock():
    clock = task.Clock()
    clock.advance(1_800_000_000)
    return clock


def open_tunnel_of_node_a(redis, clock):
    """Node a after one beat, with `wire` attached: (store, heartbeat, claim)."""
    store, heartbeat = node(redis, clock)
    resolve(heartbeat.beat())
    claim = resolve(store.claim("wire"))
    resolve(store.attach(claim.lease, WEB))
    return store, heartbeat, claim


def test_a_process_restarted_under_its_node_id_within_the_ttl_reserves_what_the_last_one_left(redis):
    clock = epoch_clock()
    _, _, claim = open_tunnel_of_node_a(redis, clock)
    # The process dies; another starts under the same id before the entry expires.
    clock.advance(2)
    store, restarted = node(redis, clock)
    resolve(restarted.beat())
    assert resolve(store.lookup("wire")) == ()  # no tunnel here serves it any more
    assert isinstance(resolve(store.claim("wire")).value, NameTaken)
    assert resolve(store.claim("wire", claim.token)).name == "wire"  # its client takes it back
    assert restarted.registry_up()


def test_a_restarted_process_drops_the_claims_its_predecessor_never_opened(redis):
    clock = epoch_clock()
    store, heartbeat = node(redis, clock)
    resolve(heartbeat.beat())
    resolve(store.claim("half-open"))  # the process died before its tunnel opened
    resolve(store.claim("shared", pool="pool-key"))
    clock.advance(2)
    store, restarted = node(redis, clock)
    resolve(restarted.beat())
    assert resolve(store.claim("half-open")).name == "half-open"  # free, not held by a ghost
    assert resolve(store.claim("shared")).name == "shared"
    assert resolve(redis.scard("tpot:node:node-a")) == 2  # the two claims just made


def test_later_beats_of_a_live_node_write_nothing_back(redis):
    clock = epoch_clock()
    store, heartbeat, claim = open_tunnel_of_node_a(redis, clock)
    clock.advance(2)
    resolve(heartbeat.beat())
    assert [route.lease for route in resolve(store.lookup("wire"))] == [claim.lease]
    assert (heartbeat.nodes_alive(), heartbeat.cluster_tunnels()) == (1, 1)
