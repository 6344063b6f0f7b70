"""The twistd plugin's body: `twistd -n tpot --domain DOMAIN` options and service tree."""

import os
import socket
import sys

from tpot.protocol import eventloop

# Before anything imports the reactor (twistd imports this module before it does, unless
# its -r installed one already): both ends' epoll reactor, tpot.protocol.eventloop.
eventloop.install()

import txaio
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet import reactor as default_reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import UNIXServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThreadPool
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.protocols.haproxy import proxyEndpoint
from twisted.python import log as legacy_log
from twisted.python import threadpool, usage

from tpot import __version__
from tpot.protocol.heap import freeze_once_running
from tpot.protocol.transports import accepts_at_once
from tpot.server.authenticator import Authenticator
from tpot.server.cluster.heartbeat import Heartbeat
from tpot.server.cluster.node import ClusterNode
from tpot.server.cluster.peers import PeerDialer, PeerListenFactory
from tpot.server.cluster.redis_store import RedisNameStore, redacted_url
from tpot.server.cluster.siblings import (
    SiblingListenFactory,
    Siblings,
    make_worker_directory,
    remove_orphaned_directory,
    remove_worker_directory,
    socket_path,
)
from tpot.server.config import ConfigError, server_settings, worker_settings
from tpot.server.connect import ConnectFactory
from tpot.server.drain import DrainingListeners
from tpot.server.memory_store import MemoryNameStore
from tpot.server.logs import json_observer, twistd_observer, without_debug
from tpot.server.router import RouterFactory
from tpot.server.startup import IPV4, IPV6, UNIX, Listener, describe, kind_of, startup_line
from tpot.server.table import TunnelTable
from tpot.server.tunnel import TunnelFactory
from tpot.server.workers import FIRST_FD, InheritedEndpoint, ParentWatch, RecordingEndpoint, Workers

log = Logger()

# One thread: guessers, however many, can take one core with the KDF, never every core.
KDF_THREADS = 1
LIMIT_OPTIONS = ("header-timeout", "idle-timeout", "drain-timeout", "max-tunnels", "max-connections-per-ip")
CLUSTER_OPTIONS = ("redis", "cluster-secret", "node-id", "peer-listen", "advertise", "node-ttl")
LOG_FORMATS = ("text", "json")


class Options(usage.Options):
    synopsis = "--domain DOMAIN [--port PORT | --listen ENDPOINT ...] [--auth-key KEY]"
    longdesc = (
        "Serve TPoT tunnels on one port: the bare DOMAIN is the control endpoint and "
        "NAME.DOMAIN reaches tunnel NAME. Settings default to the DOMAIN, AUTH_KEY and "
        "PORT environment variables and a .env file in the working directory."
    )
    optParameters = [
        ["domain", "d", None, "The domain tunnels live under (env DOMAIN)."],
        ["port", "p", None, "TCP port to listen on (env PORT, default 3000)."],
        ["auth-key", "k", None, "Shared key clients must prove, at least 32 characters (env AUTH_KEY)."],
        ["header-timeout", None, None, "Seconds a connection may take to send its first request head (default 10)."],
        ["idle-timeout", None, None, "Seconds of silence after which a visitor connection is closed (default 3600)."],
        ["max-tunnels", None, None, "Most tunnels open at once (default: no limit)."],
        ["max-connections-per-ip", None, None, "Most open connections from one address (default: no limit)."],
        ["drain-timeout", None, None, "Seconds open conversations get to finish after SIGTERM (default 30)."],
        ["metrics-token", None, None, "Require Authorization: Bearer TOKEN for /metrics (env METRICS_TOKEN)."],
        ["log-format", None, "text", "text, or json: one JSON object per line on stdout."],
        ["reserved-names", None, None,
         "Comma-separated names no tunnel may take, replacing the built-in list (www, api, admin, ...)."],
        ["redis", None, None,
         "Be one node of a cluster sharing this Redis: redis://[:password@]host:port/db, or rediss:// for TLS"
         " (env REDIS_URL)."],
        ["cluster-secret", None, None,
         "What the nodes of a cluster prove to each other, at least 32 characters (env CLUSTER_SECRET)."],
        ["node-id", None, None, "This node's id in the cluster (default: the host name and a random suffix)."],
        ["peer-listen", None, None, "Endpoint where other nodes hand this one its visitors (default tcp:3001)."],
        ["advertise", None, None,
         "HOST:PORT other nodes dial to reach --peer-listen (env TPOT_ADVERTISE; default: this host's name)."],
        ["node-ttl", None, None,
         "Seconds a stopped node's tunnels stay routed to it before they wait for their clients elsewhere"
         " (default 10)."],
        ["workers", None, None,
         "Processes on this machine sharing the listening port(s), each a node of the cluster with the next"
         " peer port (default 1; more need --redis)."],
        ["worker", None, None, "Set by worker 0 for the workers it starts: which one this is."],
        ["worker-dir", None, None, "Set by worker 0 for the workers it starts: where they reach each other."],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []
        self["trusted-proxy"] = []

    def parseOptions(self, options=None):
        # Worker 0 starts the others with the same options.
        self.argv = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_listen(self, description):
        """A Twisted endpoint to listen on, e.g. tcp:3000 (repeatable; replaces --port)."""
        self["listen"].append(description)

    def opt_trusted_proxy(self, cidr):
        """Take the visitor address from X-Forwarded-For when the peer is in CIDR (repeatable)."""
        self["trusted-proxy"].append(cidr)

    def postOptions(self):
        try:
            self["settings"] = worker_settings(server_settings(
                self["domain"], self["auth-key"], self["port"], self["listen"],
                limits={name.replace("-", "_"): self[name] for name in LIMIT_OPTIONS},
                metrics_token=self["metrics-token"], trusted_proxies=self["trusted-proxy"],
                reserved_names=self["reserved-names"],
                cluster={name.replace("-", "_"): self[name] for name in CLUSTER_OPTIONS},
            ), self["workers"], self["worker"])
            self._choose_log_format()
        except ConfigError as error:
            # One sentence, not twistd's usage dump followed by it.
            raise SystemExit(f"tpot: {error}") from None

    def _choose_log_format(self):
        if self["log-format"] not in LOG_FORMATS:
            raise ConfigError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {self['log-format']!r}.")

    def opt_version(self):
        """Print tpot's version and exit."""
        print(f"tpot {__version__}")
        sys.exit(0)

    def log_observer(self):
        """How the application twistd makes for this service logs: twistd's own observer
        (stdout, --logfile or --syslog) or JSON lines, at info and above; None outside twistd
        or when twistd was given a --logger, which it prefers."""
        twistd = getattr(self, "parent", None)
        if twistd is None or twistd.get("logger") is not None:
            return None
        return without_debug(json_observer() if self["log-format"] == "json" else twistd_observer(twistd))


class ListeningService(StreamServerEndpointService):
    """Listens (once, from makeService or at start-up) and stops twistd with one sentence if
    it cannot; `bound` fires with the listening port."""

    _raiseSynchronously = True

    def __init__(self, description, endpoint, factory):
        super().__init__(endpoint, factory)
        self.description = description
        self.bound = Deferred()

    def privilegedStartService(self):
        if self._waitingForPort is not None:
            return
        try:
            # Twisted's port announces itself in endpoint words ("RouterFactory starting on
            # 3000") before every port is bound: debug; the start-up line says it for a person.
            legacy_log.callWithContext({"log_level": LogLevel.debug}, super().privilegedStartService)
        except CannotListenError as error:
            reason = getattr(error.socketError, "strerror", None) or error.socketError
            raise SystemExit(f"tpot: cannot listen on {self._where(error)}: {reason}.") from None
        self._waitingForPort.addCallback(self._bound)

    def _where(self, error):
        """`port 3000 on 127.0.0.1` for a TCP port, else the endpoint as given."""
        if kind_of(self.description) == UNIX or not isinstance(error.port, int):
            return self.description
        return describe(Listener(kind_of(self.description), error.interface or "", error.port))

    def _bound(self, port):
        accepts_at_once(port)  # for the visitors' connections (tpot.protocol.transports)
        self.bound.callback(port)
        return port


class ThreadPoolService(Service):
    """Runs a bounded thread pool for the lifetime of the application."""

    def __init__(self, pool):
        self.pool = pool

    def startService(self):
        super().startService()
        self.pool.start()

    def stopService(self):
        super().stopService()
        self.pool.stop()


class ServerTree(MultiService):
    """The server's services; the application twistd puts them in also logs through
    `observer`, when there is one (Options.log_observer)."""

    observer = None

    def setServiceParent(self, parent):
        super().setServiceParent(parent)
        if self.observer is not None:
            # twistd starts logging after making the application, through this component.
            parent.setComponent(ILogObserver, self.observer)


class StartupLine(Service):
    """Logs the start-up line once every listener is bound: `line(ports)` makes it from
    their ports, in the order of `listeners`."""

    def __init__(self, listeners, line):
        self.listeners = listeners
        self.line = line

    def startService(self):
        super().startService()
        gatherResults([listener.bound for listener in self.listeners]).addCallback(
            lambda ports: log.info("{line}", line=self.line(ports)))


def bound_listener(description, port):
    """The startup.Listener of `port`, listening as endpoint `description` says."""
    address = port.getHost()
    if not isinstance(address, (IPv4Address, IPv6Address)):
        return Listener(UNIX, os.fsdecode(getattr(address, "name", None) or description))
    families = {IPV4} if isinstance(address, IPv4Address) else {IPV6}
    if isinstance(address, IPv6Address) and address.host == "::" and not _v6only(port):
        families.add(IPV4)
    return Listener(kind_of(description), address.host, address.port, frozenset(families))


def _v6only(port):
    # Without a socket to ask (not a real port), what the system does by default.
    sock = getattr(port, "socket", None)
    try:
        return bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)) if sock else False
    except OSError:
        return False


def _endpoint(reactor, description, option="--listen"):
    try:
        return serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError) as error:
        raise SystemExit(f"tpot: {option} {description!r} is not a valid endpoint ({error}).") from None


def _listen_endpoint(reactor, settings, index, ports):
    """The endpoint of `settings.listen[index]`: a worker other than 0 listens on the socket
    worker 0 made (tpot.server.workers), with the same PROXY protocol wrapping."""
    description = settings.listen[index]
    if settings.worker > 0:
        inherited = InheritedEndpoint(reactor, FIRST_FD + index)
        return proxyEndpoint(inherited) if description.startswith("haproxy:") else inherited
    endpoint = _endpoint(reactor, description)
    return RecordingEndpoint(endpoint, ports) if settings.workers > 1 else endpoint


def _siblings(reactor, settings, directory):
    """With --workers, what hands visitor connections to the other workers of this machine;
    worker 0 makes their `directory` (the others are given it)."""
    if settings.workers == 1:
        return None
    if settings.worker == 0:
        try:
            directory = make_worker_directory()
        except OSError as error:
            raise SystemExit(f"tpot: cannot make the workers' directory: {error}.") from None
        # Once every service has stopped: worker 0's socket, then the directory.
        reactor.addSystemEventTrigger("after", "shutdown", remove_worker_directory, directory)
    elif not directory:
        raise SystemExit("tpot: --worker is for the workers worker 0 starts; use --workers N.")
    base = settings.cluster.node_id.rpartition("-w")[0]
    return Siblings(reactor, directory, base, settings.worker, settings.workers)


def makeService(config, reactor=default_reactor):
    # Autobahn logs every frame at debug level; twistd would record all of it.
    txaio.use_twisted()
    txaio.set_global_log_level("info")
    settings = config["settings"]
    top = ServerTree()
    limits = settings.limits
    cluster = settings.cluster
    table = TunnelTable()
    pool = threadpool.ThreadPool(minthreads=0, maxthreads=KDF_THREADS, name="tpot-kdf")
    ThreadPoolService(pool).setServiceParent(top)
    authenticator = Authenticator(
        settings.auth_key, lambda f, *args: deferToThreadPool(reactor, pool, f, *args)
    )
    if cluster is None:
        store, heartbeat, peers = MemoryNameStore(max_tunnels=limits.max_tunnels, clock=reactor), None, None
    else:
        store = RedisNameStore(None, cluster.node_id, max_tunnels=limits.max_tunnels, clock=reactor)
        heartbeat = Heartbeat(store, table, cluster.secret, cluster.advertise, reactor, cluster.node_ttl,
                              redacted_url(cluster.redis_url))
        # Before the listeners: stopped after them, so a draining node still reaches Redis.
        ClusterNode(store, heartbeat, cluster.redis_url, reactor).setServiceParent(top)
    tunnels = TunnelFactory(store, table, reactor)
    if cluster is not None:
        peers = PeerDialer(cluster.secret, cluster.node_id, reactor, tunnels.stats)
    siblings = _siblings(reactor, settings, config.get("worker-dir"))
    router = RouterFactory(
        settings.domain, store, table, authenticator, tunnels, reactor,
        header_timeout=limits.header_timeout, idle_timeout=limits.idle_timeout,
        max_per_source=limits.max_connections_per_ip,
        metrics_token=settings.metrics_token, trusted_proxies=settings.trusted_proxies,
        connections=ConnectFactory(reactor), reserved_names=settings.reserved_names,
        peers=peers, cluster=heartbeat, siblings=siblings,
    )
    listeners = DrainingListeners(router, table, reactor, limits.drain_timeout, relays=[peers] if peers else [])
    listeners.setServiceParent(top)
    ports = []  # worker 0's listening ports, which the other workers inherit
    visitors = [ListeningService(description, _listen_endpoint(reactor, settings, index, ports), router)
                for index, description in enumerate(settings.listen)]
    for service in visitors:
        service.setServiceParent(listeners)
    if siblings is not None:
        path = socket_path(siblings.directory, settings.worker)
        if os.path.exists(path):
            os.unlink(path)  # the one a restarted worker's previous process left
        ListeningService(f"unix:{path}", UNIXServerEndpoint(reactor, path, mode=0o600),
                         SiblingListenFactory(router, reactor)).setServiceParent(listeners)
    if settings.worker > 0:
        # Best effort: the directory goes once empty, when the last worker has stopped.
        ParentWatch(reactor, lambda: remove_orphaned_directory(siblings.directory)).setServiceParent(top)
    elif settings.workers > 1:
        Workers(reactor, settings.workers, getattr(config, "argv", ()), siblings.base, siblings.directory, ports,
                limits.drain_timeout).setServiceParent(top)
    peer_port = None
    if cluster is not None:
        peer_port = ListeningService(cluster.peer_listen, _endpoint(reactor, cluster.peer_listen, "--peer-listen"),
                                     PeerListenFactory(cluster.secret, router, reactor))
        peer_port.setServiceParent(listeners)
    # Here rather than when twistd starts the services: twistd has not yet written its pid
    # file or daemonized, so a port in use stops it with one sentence on the terminal and
    # nothing left behind.  The sockets survive its fork.
    for service in listeners:
        service.privilegedStartService()
    StartupLine(visitors + ([peer_port] if peer_port else []),
                lambda ports: _startup_line(settings, ports)).setServiceParent(top)
    # After listening: a start that fails leaves no log file either.
    top.observer = config.log_observer() if isinstance(config, Options) else None
    freeze_once_running(reactor)
    return top


def _startup_line(settings, ports):
    """The start-up line from the bound `ports` of settings.listen and then the peer port."""
    cluster = settings.cluster
    listeners = [bound_listener(description, port) for description, port in zip(settings.listen, ports)]
    if cluster is None:
        place = ""
    else:
        place = (f", node {cluster.node_id} of the cluster in {redacted_url(cluster.redis_url)},"
                 f" peer {describe(bound_listener(cluster.peer_listen, ports[-1]))} reached at {cluster.advertise}")
    return startup_line(
        __version__, settings.domain, listeners, settings.auth_key,
        workers="" if settings.workers == 1 else f", worker {settings.worker} of {settings.workers}",
        cluster=place,
    )
