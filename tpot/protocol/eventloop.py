"""The reactor both ends run on: Twisted's epoll reactor without a logging context per event.

Twisted's reactor calls the handler of each socket that is ready through
log.callWithLogger, which asks the socket for its log prefix, copies a dict and goes
through four more Python calls so that legacy log.msg calls made in the handler carry that
prefix as their "system": about 8% of the client's CPU per keep-alive request and 10% of
the server's (py-spy), 5% per new connection.  Our logging is twisted.logger's and
Autobahn's (txaio), which never read that context.  An exception in a handler is still
logged and drops its connection (Twisted's _doReadOrWrite does both), only with "-" as the
legacy system.

Installed (`install`) by tpot's main, and by tpot.server.tap as twistd imports it, before
either imports the reactor: twistd's -r, which installs its reactor earlier, still wins.
Elsewhere than Linux (no epoll), or when a reactor is installed already, Twisted's default
reactor runs as before.

It also runs what was asked to run once a turn's events are handled (`call_after_events`):
the tunnels' WebSockets send there what the turn wrote to them (tpot.protocol.transports),
in one send, rather than asking epoll to say when the socket is writable and sending a
turn later.

A subclass, not a change to Twisted: `doPoll` is the loop of EPollReactor.doPoll minus the
context; the names it relies on are in TWISTED_NAMES, which tests/memory/test_eventloop.py
checks against the installed Twisted.
"""

import errno
import sys

from twisted.logger import Logger

TWISTED_NAMES = ("twisted.internet.epollreactor.EPollReactor", "_poller", "_selectables", "_reads", "_writes",
                 "_doReadOrWrite")

log = Logger()

try:
    from select import EPOLLIN, EPOLLOUT

    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # no epoll here
    EPollReactor = None


if EPollReactor is not None:

    class LeanEPollReactor(EPollReactor):
        def __init__(self):
            super().__init__()
            self._after_events = []

        def call_after_events(self, fn):
            """Call fn() once the events of this turn are handled; called between turns, before
            the next wait for events.  Each call runs once, in the order asked."""
            self._after_events.append(fn)

        def add_reader_writer(self, selectable):
            """addReader and addWriter with one epoll_ctl, for a socket watched neither way yet."""
            fd = selectable.fileno()
            if fd in self._reads or fd in self._writes:
                self.addReader(selectable)
                self.addWriter(selectable)
                return
            self._poller.register(fd, EPOLLIN | EPOLLOUT)
            self._reads.add(fd)
            self._writes.add(fd)
            self._selectables[fd] = selectable

        def _run_after_events(self):
            # What these calls ask for in turn waits for the next pass: a bounded pass.
            pending, self._after_events = self._after_events, []
            for fn in pending:
                try:
                    fn()
                except Exception:
                    log.failure("running {fn} after a turn's events", fn=fn)

        def doPoll(self, timeout):
            if self._after_events:
                # Asked between turns (a timed call, or a previous pass): run before any wait,
                # and do not wait, since they may have asked for a timed call in turn.
                self._run_after_events()
                timeout = 0
            try:
                events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
            except OSError as error:
                if error.errno == errno.EINTR:
                    return
                raise
            selectables, handle = self._selectables, self._doReadOrWrite
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is not None:
                    try:
                        handle(selectable, fd, event)
                    except Exception:  # what callWithLogger would have logged; KeyboardInterrupt goes on
                        log.failure("handling an event of {selectable}", selectable=selectable)
            if self._after_events:
                self._run_after_events()

        doIteration = doPoll


def install():
    """Install LeanEPollReactor as the reactor, where there is epoll and no reactor yet."""
    if EPollReactor is None or "twisted.internet.reactor" in sys.modules:
        return
    from twisted.internet.main import installReactor

    installReactor(LeanEPollReactor())
