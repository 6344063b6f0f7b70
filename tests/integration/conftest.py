"""Tests against real servers other than ours (redis-server), driven through the reactor.

The reactor is not running: `resolve` turns it (reactor.iterate) until a Deferred has
fired, for at most a bounded time, so that the synchronous store contract can run here.
"""

import time

import pytest
from twisted.internet import reactor

from tests.support.redis import RedisServer
from tpot.server.cluster.redis_store import connect_redis

WAIT = 10


def resolve(d, timeout=WAIT):
    """The result of `d` (or its Failure), waiting at most `timeout` seconds."""
    box = []
    d.addBoth(box.append)
    deadline = time.monotonic() + timeout
    while not box and time.monotonic() < deadline:
        reactor.iterate(0.01)
    assert box, f"the Deferred did not fire within {timeout} s"
    return box[0]


@pytest.fixture(scope="session", autouse=True)
def reactor_threads():
    """The reactor's thread pool, which a running reactor would have started: txredisapi
    resolves host names through it (HostnameEndpoint)."""
    pool = reactor.getThreadPool()
    pool.start()
    yield
    # Stopped here, so the reactor's own trigger (fired at exit) must not stop it again.
    reactor.removeSystemEventTrigger(reactor.threadpoolShutdownID)
    pool.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server):
    """A connection to the test Redis, emptied first."""
    connection = resolve(connect_redis(redis_server.url))
    resolve(connection.flushdb())
    yield connection
    resolve(connection.disconnect())
