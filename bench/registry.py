"""The name registry at scale: `python -m bench.registry REDIS_URL REDIS_PID NAMES SECONDS CONCURRENCY`.

Claims and attaches NAMES names in the Redis at REDIS_URL through RedisNameStore (as a
node does for each new tunnel), then looks random ones up from a second node (as nodes do
for each new visitor connection): for SECONDS one at a time (the latency of one lookup),
then for SECONDS with CONCURRENCY outstanding (load; one Python process cannot saturate
Redis, so Redis's own CPU per lookup, from /proc/REDIS_PID, says how many one Redis core
carries). Prints one JSON line: claims/s, lookups/s, latency p50/p99, Redis CPU per
lookup and memory per name (INFO memory, before and after). Run by
bench/scenarios/cluster.py in a process of its own, since it runs the reactor.
"""

import json
import random
import statistics
import sys
import time

from twisted.internet import defer, task

from bench.procfs import cpu_seconds
from tpot.protocol.codec import HTTP
from tpot.server.cluster.redis_store import RedisNameStore, connect_redis
from tpot.server.store import RouteInfo

BATCH = 500  # claims outstanding at once while filling the registry
TTL = 3600  # the nodes' heartbeats last the whole run


def used_memory(redis):
    return redis.info("memory").addCallback(lambda info: int(info["used_memory"]))


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@defer.inlineCallbacks
def fill(store, count):
    """Claim and attach `count` names; their names and the seconds it took."""
    names = [f"bench{i:06d}" for i in range(count)]
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        claims = yield defer.gatherResults([store.claim(name) for name in names[start:start + BATCH]])
        yield defer.gatherResults([store.attach(claim.lease, RouteInfo(HTTP)) for claim in claims])
    return names, time.perf_counter() - started


@defer.inlineCallbacks
def look_up(reactor, store, names, seconds, concurrency):
    """Lookups of random names, `concurrency` at a time, for `seconds`; their latencies (s)."""
    latencies = []
    deadline = time.perf_counter() + seconds

    @defer.inlineCallbacks
    def one_lane():
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            routes = yield store.lookup(random.choice(names))
            latencies.append(time.perf_counter() - started)
            assert len(routes) == 1, routes
    yield defer.gatherResults([one_lane() for _ in range(concurrency)])
    return latencies


@defer.inlineCallbacks
def lookups(reactor, store, names, seconds, concurrency, redis_pid):
    """The figures of `concurrency` lanes of lookups for `seconds`."""
    cpu_before, started = cpu_seconds(redis_pid), time.perf_counter()
    latencies = yield look_up(reactor, store, names, seconds, concurrency)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(redis_pid) - cpu_before
    return {
        "concurrency": concurrency,
        "lookups": len(latencies),
        "lookups_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "redis_cpu_us_per_lookup": round(cpu / len(latencies) * 1e6, 1),
    }


@defer.inlineCallbacks
def measure(reactor, url, redis_pid, count, seconds, concurrency):
    redis = yield connect_redis(url, reconnect=False)
    yield redis.flushdb()
    filler = RedisNameStore(redis, "bench-a")
    visitor_node = RedisNameStore(redis, "bench-b")
    yield filler.beat("127.0.0.1:1 unsigned", TTL)
    yield visitor_node.beat("127.0.0.1:2 unsigned", TTL)
    before = yield used_memory(redis)
    names, fill_seconds = yield fill(filler, count)
    after = yield used_memory(redis)
    single = yield lookups(reactor, visitor_node, names, seconds, 1, redis_pid)
    loaded = yield lookups(reactor, visitor_node, names, seconds, concurrency, redis_pid)
    yield redis.flushdb()
    yield redis.disconnect()
    print(json.dumps({
        "names": count,
        "claims_per_s": round(count / fill_seconds, 1),
        "bytes_per_name": round((after - before) / count, 1),
        "redis_used_memory_mb": round(after / 1e6, 1),
        "one_at_a_time": single,
        "loaded": loaded,
    }))


def main(argv):
    url, redis_pid, count, seconds, concurrency = argv[0], int(argv[1]), int(argv[2]), float(argv[3]), int(argv[4])
    task.react(measure, [url, redis_pid, count, seconds, concurrency])


if __name__ == "__main__":
    main(sys.argv[1:])
