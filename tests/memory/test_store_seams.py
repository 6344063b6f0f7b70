"""The router and the tunnel against name stores other than the in-memory one: routes to
other nodes, routes whose tunnel is not on this node, stores that answer later, and a
lease lost before the tunnel opened.  Every fake here is checked against INameStore."""

import pytest
from twisted.internet import defer, task
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support.memory import (
    MemoryServer,
    MemoryTransport,
    parse_response,
    settle,
    upgrade_request,
    use_clock,
    visitor_request,
)
from tests.support.memory import connect as memory_connect
from tpot.protocol.codec import HTTP, TCP
from tpot.server.memory_store import MemoryNameStore
from tpot.server.router import RouterProtocol
from tpot.server.store import INameStore, LeaseLost, LocalRoute, RemoteRoute, RouteInfo

SECRET = "s3cret-" * 6


@implementer(INameStore)
class RoutesOnly:
    """A store that knows only the routes it was given; claims are not its business here."""

    def __init__(self, routes):
        self.routes = routes

    def claim(self, name=None, token=None, pool=None):
        raise NotImplementedError

    def attach(self, lease, route_info):
        raise NotImplementedError

    def release(self, lease, reserve=False):
        raise NotImplementedError

    def lookup(self, name):
        return defer.succeed((self.routes[name],) if name in self.routes else ())


@implementer(INameStore)
class Later:
    """The in-memory store, answering only when `answer_all()` runs, as a remote store would."""

    def __init__(self, clock):
        self.store = MemoryNameStore(clock=clock)
        self.pending = []

    def _later(self, d):
        later = defer.Deferred()
        self.pending.append((d, later))
        return later

    def claim(self, name=None, token=None, pool=None):
        return self._later(self.store.claim(name, token, pool))

    def attach(self, lease, route_info):
        return self._later(self.store.attach(lease, route_info))

    def release(self, lease, reserve=False):
        return self._later(self.store.release(lease, reserve))

    def lookup(self, name):
        return self._later(self.store.lookup(name))

    def answer_all(self):
        while self.pending:
            d, later = self.pending.pop(0)
            d.chainDeferred(later)


@implementer(INameStore)
class LosesLeases(MemoryNameStore):
    """A store whose claims are gone by the time the tunnel attaches (a lease that expired)."""

    def attach(self, lease, route_info):
        return defer.fail(LeaseLost(lease))


def serving(make_store):
    """A MemoryServer with the store `make_store(clock)` builds on its clock."""
    server = MemoryServer()
    server.store = server.router.store = server.tunnels.store = make_store(server.clock)
    return server


@pytest.fixture
def running():
    servers = []

    def run(server):
        servers.append(use_clock(server.clock))
        return server

    yield run
    for restore in servers:
        restore()


def status_of(server, transport):
    settle(server.clock)
    assert transport.lost
    return parse_response(transport.value()).status


def connect_request(server, name):
    return upgrade_request(f"/connect-tpot?subdomain={name}", host=server.domain)


def test_the_fakes_provide_the_interface():
    assert verifyObject(INameStore, RoutesOnly({}))
    assert verifyObject(INameStore, Later(task.Clock()))
    assert verifyObject(INameStore, LosesLeases(clock=task.Clock()))


def test_a_tunnel_on_another_node_is_503_until_routes_cross_nodes(running):
    routes = {
        "web": RemoteRoute("web", "node-2", RouteInfo(HTTP)),
        "ssh": RemoteRoute("ssh", "node-2", RouteInfo(TCP, SECRET)),
    }
    server = running(serving(lambda clock: RoutesOnly(routes)))
    assert status_of(server, server.connect(visitor_request("web"))) == 503
    assert status_of(server, server.connect(connect_request(server, "ssh"))) == 503
    # The kind comes from the route: a TCP tunnel is still 404 to a visitor.
    assert status_of(server, server.connect(visitor_request("ssh"))) == 404


def test_a_local_route_whose_tunnel_is_not_in_the_table_is_503(running):
    routes = {
        "web": LocalRoute("web", "gone-lease", RouteInfo(HTTP)),
        "ssh": LocalRoute("ssh", "gone-lease", RouteInfo(TCP, SECRET)),
    }
    server = running(serving(lambda clock: RoutesOnly(routes)))
    assert status_of(server, server.connect(visitor_request("web"))) == 503
    assert status_of(server, server.connect(connect_request(server, "ssh"))) == 503
    assert server.table.active_tunnels() == 0


def test_a_store_that_answers_later_still_opens_and_routes(running):
    server = running(serving(Later))
    store = server.store
    transport = server.connect(upgrade_request("/create-tpot?subdomain=wire", host=server.domain))
    settle(server.clock)
    assert transport.value() == b""  # the claim has not been answered
    store.answer_all()
    settle(server.clock)
    assert b" 101 " in transport.value().split(b"\r\n", 1)[0]
    store.answer_all()  # the attach
    (route,) = store.store.lookup("wire").result
    assert server.table.get(route.lease) is not None
    visitor = server.connect(visitor_request("wire"))
    settle(server.clock)
    store.answer_all()  # the lookup
    settle(server.clock)
    assert not visitor.lost  # handed to the tunnel, waiting for its answer
    assert server.table.active_conversations() == 1


def test_a_tunnel_whose_lease_was_lost_before_it_opened_closes(running):
    server = running(serving(lambda clock: LosesLeases(clock=clock)))
    store = server.store
    transport = server.connect(upgrade_request("/create-tpot?subdomain=wire", host=server.domain))
    settle(server.clock)
    assert transport.lost
    assert server.table.active_tunnels() == 0
    # Its claim went back to the store: the name is free again.
    assert store.claim("wire").result.name == "wire"


def test_a_connection_handed_over_by_another_node_goes_to_a_tunnel_here_without_asking_the_store(running):
    """The node that forwarded a visitor found this node in the registry: a tunnel here
    serves it (one registry round trip per visitor connection), never a second hop."""
    server = running(MemoryServer())
    peer = server.open_tunnel("shared")

    def no_lookup(name):
        raise AssertionError("a handed-over connection asked the registry again")
    server.router.store = RoutesOnly({})
    server.router.store.lookup = no_lookup
    transport = MemoryTransport(server.clock, peer=("127.0.0.1", 3001))
    memory_connect(RouterProtocol(server.router, hop=("203.0.113.9", 4444)), transport)
    transport.receive(visitor_request("shared"))
    settle(server.clock)
    opened, relayed = peer.new_messages()
    assert opened[:2] == b"\x11H" and opened[4:] == bytes([203, 0, 113, 9]) + (4444).to_bytes(2, "little")
    assert relayed.endswith(visitor_request("shared"))
