"""`--workers N`: N processes of one machine serving the same listening sockets.

The process twistd started is worker 0: it listens as usual, then starts workers 1 to N-1
(`Workers`) with its listening sockets inherited, as file descriptors 3, 4, ... in
`--listen` order (`InheritedEndpoint`).  Each worker is a node of the cluster of its own
(tpot.server.config.worker_settings: its id, its peer port), so any worker serves any
tunnel, through Redis and the peer ports, as nodes do; the kernel gives each new
connection to whichever worker accepts it first.  Worker 0 starts a worker that exits
again (after a pause that grows while it keeps failing), and stops them with SIGTERM when
it stops, so that each drains; a worker whose worker 0 is gone (`kill -9`) stops by itself
(`ParentWatch`).
"""

import os
import socket
import sys

from twisted.application.service import Service
from twisted.internet import defer, error, protocol, task
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

FIRST_FD = 3
# Seconds before a worker that exited is started again, by how many times it failed in a row.
RESTART_DELAYS = (1, 2, 5, 10, 30)
# A worker that ran this long before exiting is failing afresh, not still.
STEADY_SECONDS = 60
# What a worker gets beyond the drain timeout to stop after SIGTERM, before SIGKILL.
STOP_GRACE = 5
PARENT_POLL = 1.0

log = Logger()


@implementer(IStreamServerEndpoint)
class RecordingEndpoint:
    """`endpoint`, keeping the ports it listens on: worker 0's sockets, for the others."""

    def __init__(self, endpoint, ports):
        self.endpoint = endpoint
        self.ports = ports

    def listen(self, factory):
        return self.endpoint.listen(factory).addCallback(self._record)

    def _record(self, port):
        self.ports.append(port)
        return port


@implementer(IStreamServerEndpoint)
class InheritedEndpoint:
    """A listening socket this process inherited as file descriptor `fd`."""

    def __init__(self, reactor, fd):
        self.reactor = reactor
        self.fd = fd

    def listen(self, factory):
        try:
            with socket.socket(fileno=os.dup(self.fd)) as probe:
                family = probe.family
            # The reactor listens on a copy of its own.
            port = self.reactor.adoptStreamPort(self.fd, family, factory)
        except OSError as failure:
            return defer.fail(error.CannotListenError(None, self.fd, failure))
        os.close(self.fd)
        return defer.succeed(port)


def worker_command(argv, node_id, directory, index):
    """The command line of worker `index`: twistd, with worker 0's tpot options `argv`, the
    node id the workers' ids are made of (tpot.server.config.worker_settings) and the
    directory of their sockets (tpot.server.cluster.siblings)."""
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "--nodaemon", "--pidfile=", "tpot", *argv, "--node-id", node_id, "--worker-dir", directory,
            "--worker", str(index)]


class _WorkerProcess(protocol.ProcessProtocol):
    def __init__(self, workers, index):
        self.workers = workers
        self.index = index
        self.ended = defer.Deferred()

    def processEnded(self, reason):
        self.ended.callback(None)
        self.workers.ended(self.index, reason.value)


class Workers(Service):
    """Starts and keeps running workers 1 to `count` - 1, each with the sockets of `ports`
    (filled once worker 0 listens), the tpot options `argv` and the ids of `node_id`."""

    def __init__(self, reactor, count, argv, node_id, directory, ports, stop_timeout):
        self.reactor = reactor
        self.count = count
        self.argv = list(argv)
        self.node_id = node_id
        self.directory = directory
        self.ports = ports
        self.stop_timeout = stop_timeout
        self.running_workers = {}  # index -> (process transport, _WorkerProcess)
        self._failures = dict.fromkeys(range(1, count), 0)
        self._started_at = {}
        self._restarts = {}
        self._stopping = False

    def startService(self):
        super().startService()
        for index in range(1, self.count):
            self._spawn(index)

    def _spawn(self, index):
        self._restarts.pop(index, None)
        if self._stopping:
            return
        fds = {0: 0, 1: 1, 2: 2}
        for offset, port in enumerate(self.ports):
            fds[FIRST_FD + offset] = port.fileno()
        process = _WorkerProcess(self, index)
        transport = self.reactor.spawnProcess(process, sys.executable, worker_command(self.argv, self.node_id, self.directory, index),
                                              env=dict(os.environ), childFDs=fds)
        self.running_workers[index] = (transport, process)
        self._started_at[index] = self.reactor.seconds()
        log.info("worker {index} started (pid {pid})", index=index, pid=transport.pid)

    def ended(self, index, reason):
        self.running_workers.pop(index, None)
        if self._stopping:
            return
        if self.reactor.seconds() - self._started_at[index] >= STEADY_SECONDS:
            self._failures[index] = 0
        delay = RESTART_DELAYS[min(self._failures[index], len(RESTART_DELAYS) - 1)]
        self._failures[index] += 1
        log.warn("worker {index} exited ({reason}); starting it again in {delay} s",
                 index=index, reason=_exit_text(reason), delay=delay)
        self._restarts[index] = self.reactor.callLater(delay, self._spawn, index)

    def stopService(self):
        super().stopService()
        self._stopping = True
        for call in self._restarts.values():
            call.cancel()
        self._restarts.clear()
        running = list(self.running_workers.values())
        for transport, _ in running:
            _signal(transport, "TERM")
        # Each drains as worker 0 does; past that, and a little more, it is killed.
        kill = self.reactor.callLater(self.stop_timeout + STOP_GRACE, self._kill_all)
        done = defer.DeferredList([process.ended for _, process in running])
        return done.addBoth(lambda _: kill.cancel() if kill.active() else None)

    def _kill_all(self):
        for transport, _ in list(self.running_workers.values()):
            log.warn("worker {pid} did not stop in time; killing it", pid=transport.pid)
            _signal(transport, "KILL")


def _signal(transport, name):
    try:
        transport.signalProcess(name)
    except error.ProcessExitedAlready:
        pass


def _exit_text(reason):
    if getattr(reason, "signal", None):
        return f"signal {reason.signal}"
    return f"status {getattr(reason, 'exitCode', '?')}"


class ParentWatch(Service):
    """Stops this worker when worker 0, which started it, is gone; the last one to go
    then removes the workers' `directory` (`on_orphaned`), which worker 0 could not."""

    def __init__(self, reactor, on_orphaned=lambda: None):
        self.reactor = reactor
        self.on_orphaned = on_orphaned
        self.parent_pid = os.getppid()
        self._loop = task.LoopingCall(self._check)
        self._loop.clock = reactor

    def startService(self):
        super().startService()
        self._loop.start(PARENT_POLL, now=False)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _check(self):
        if os.getppid() != self.parent_pid:
            log.warn("worker 0 (pid {pid}) is gone; this worker stops", pid=self.parent_pid)
            self._loop.stop()
            self.reactor.addSystemEventTrigger("after", "shutdown", self.on_orphaned)
            self.reactor.stop()
