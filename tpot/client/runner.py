"""Running the client: connect, print the public URL, reconnect after drops, stop cleanly.

The first connection must succeed: any failure then is final (the user is there to fix
it).  Once a tunnel has been up, drops and server restarts are retried with exponential
backoff and jitter from 1 s up to 30 s, asking for the same name with the reclaim token the
server gave us; only refusals that retrying cannot fix (400, 401) end the run.
"""

import random
import sys

from twisted.internet import defer

from tpot.client import explain
from tpot.client.health import TargetWarnings
from tpot.client.inspector.service import Inspector, listen_inspector
from tpot.client.requestlog import printable, printable_text
from tpot.client.session import TunnelClientFactory
from tpot.client.settings import EXIT_FAILURE, EXIT_OK, ClientError
from tpot.client.stats import RoundTrips
from tpot.client.tls import server_tls
from tpot.client.visitors import VisitorOptions
from tpot.protocol.auth import make_authorization
from tpot.protocol.codec import (
    ACCESS_SECRET_HEADER,
    CLOSE_NORMAL,
    EXTENSIONS_HEADER,
    IPV6,
    POOL,
    POOL_HEADER,
    RECLAIM,
    RECLAIM_HEADER,
    TCP,
)
from tpot.protocol.transports import connect_tcp

INITIAL_DELAY = 1.0
MAX_DELAY = 30.0
CLOSE_WAIT = 2.0
FINAL_STATUSES = frozenset({400, 401})


def backoff_delay(attempt, rand=random.random):
    """Seconds before retry number `attempt` (0-based): 1, 2, 4 ... 30, each stretched by up to half."""
    base = min(MAX_DELAY, INITIAL_DELAY * 2 ** attempt)
    return min(MAX_DELAY, base * (1 + rand() / 2))


class ClientRun:
    """One tunnel, run until stopped.  `inspector`: the process's Inspector when several
    tunnels share one (tpot start); otherwise this run serves its own when the settings
    ask for one.  `on_online(run)`, when given, is told of the first greeting instead of
    its announcement being printed.  `tokens`: where reclaim tokens are kept between runs
    (a ReclaimTokens), or None.  `console`: the status area (tpot.client.console) that
    shows this run (named `label` there when there are several) and takes its request log,
    or None for plain lines."""

    def __init__(self, settings, reactor, out=sys.stdout, err=sys.stderr, rand=random.random, inspector=None,
                 on_online=None, tokens=None, console=None, label=None):
        self.settings = settings
        self.reactor = reactor
        self.out = out
        self.err = err
        self.rand = rand
        self.exit_code = EXIT_OK
        self.name = None
        # The reclaim tokens kept between runs (tpot.client.reclaims): a run after a crash
        # presents the last one for its -s NAME and gets the name back at once.
        self.tokens = tokens if settings.subdomain and not settings.pool else None
        self.token = self.tokens.load(settings.server, settings.subdomain) if self.tokens else None
        self.factory = None
        self.failed_attempts = 0
        self.stopping = False
        self.status = "connecting"  # then "online", and "reconnecting" while the tunnel is down
        self.console = console
        if console is not None:
            console.add(self, label)
        # The server's round trip, measured only for the status area that shows it.
        self.round_trips = RoundTrips() if console is not None else None
        self.on_online = on_online
        self.own_inspector = inspector is None and settings.inspect is not None
        self.inspector = Inspector(settings.inspect, reactor) if self.own_inspector else inspector
        self.inspected = self.inspector.watch(settings) if self.inspector is not None else None
        # The request log, visitor policy and capture, shared by every connection of this run.
        self.visitors = self._visitor_options()
        # Whether the target answers, across reconnections; warnings even with --quiet.
        self.target_warnings = TargetWarnings.for_settings(settings, err)

    def start(self):
        self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        if self.own_inspector and not self._listen_inspector():
            return
        self.connect()

    def _listen_inspector(self):
        """Serve this run's inspector, or run without it when its default ports are taken."""
        try:
            serving = listen_inspector(self.inspector, self.err)
        except ClientError as error:
            self.fail(str(error))
            return False
        if not serving:
            self.own_inspector = False
            self.inspector = self.inspected = None
            self.visitors = self._visitor_options()
        return True

    def _visitor_options(self):
        inspected = self.inspected if self.settings.kind != TCP else None
        return VisitorOptions.for_settings(self.settings, self.reactor, self.out, inspected, self.console)

    def connect(self):
        if self.stopping:
            return
        self.factory = TunnelClientFactory(
            self.settings, self.reactor, self._headers(), self.on_greeting, self.on_closed,
            subdomain=self.name or self.settings.subdomain, on_token=self.on_token,
            visitors=self.visitors, on_unsupported=self.on_unsupported, target_warnings=self.target_warnings,
            round_trips=self.round_trips,
        )
        self.factory.clientConnectionFailed = lambda connector, reason: self.on_closed(
            None, None, None, reached=False, failure=reason.value)
        connect_tcp(self.reactor, self.factory.host, self.factory.port, self.factory, server_tls(self.settings.server))

    def _headers(self):
        extensions = [RECLAIM, IPV6]
        headers = {}
        if self.settings.kind == TCP:
            extensions.append(TCP)
            headers[ACCESS_SECRET_HEADER] = self.settings.access_secret
        if self.settings.pool:
            extensions.append(POOL)
            headers[POOL_HEADER] = self.settings.pool
        headers[EXTENSIONS_HEADER] = ", ".join(extensions)
        if self.settings.auth_key:
            # A fresh nonce and timestamp for every attempt: the server refuses replays.
            headers["Authorization"] = make_authorization(self.settings.auth_key)
        if self.token:
            headers[RECLAIM_HEADER] = self.token
        return headers

    def on_token(self, token):
        self.token = token

    def on_greeting(self, name):
        # From the server, so maybe hostile: nothing that could drive the user's terminal.
        first = self.name is None
        self.name = name
        self.failed_attempts = 0
        self.status = "online"
        if first:
            self.factory.target.check()  # says so if nothing listens there yet
        if self.tokens is not None and self.token and name == self.settings.subdomain:
            self.tokens.save(self.settings.server, name, self.token)
        if self.inspected is not None:
            self.inspected.online(name)
        if first and self.on_online is not None:
            self.on_online(self)
            return
        self.out.write(self._announcement(printable(name), first))
        if first and self.settings.pool:
            self.out.write("pool: visitors are shared with every client started with this --pool secret\n")
        if first and self.own_inspector:
            self.out.write(f"inspector: {self.inspector.url}\n")
        self.out.flush()

    def _announcement(self, name, first):
        settings = self.settings
        if settings.kind != TCP:
            url = settings.public_url(name)
            return f"tpot connected\n{url}\nForwarding {self.forwarding()}\n" if first else f"tpot reconnected: {url}\n"
        if not first:
            return f"tpot reconnected: TCP tunnel {name}\n"
        return (
            f"tpot connected\n{self.public_address()}\naccess secret: {settings.access_secret}\n"
            f"connect with: {self.connect_command()}\nForwarding {self.forwarding()}\n"
        )

    def forwarding(self):
        """`PUBLIC -> TARGET`, as ngrok shows where traffic goes."""
        return f"{self.public_address()} -> {self.target_address()}"

    def target_address(self):
        """The target as the user knows it: a URL for HTTP (http or https), host:port for TCP."""
        target = self.settings.target
        return target.host_with_port if self.settings.kind == TCP else f"{target.scheme}://{target.host_with_port}"

    def public_address(self):
        """Where visitors reach the tunnel: its URL, or for TCP its name on the server."""
        name = printable(self.name)
        if self.settings.kind != TCP:
            return self.settings.public_url(name)
        return f"TCP tunnel {name} on {self.server_url()}"

    def connect_command(self):
        """How to reach a TCP tunnel: the tpot connect command line."""
        return (f"tpot connect {printable(self.name)} -t {self.server_url()} --secret {self.settings.access_secret}"
                " --listen 127.0.0.1:PORT (or --stdio)")

    def server_url(self):
        return f"{self.settings.server.scheme}://{self.settings.server.host_with_port}"

    def on_unsupported(self, missing):
        what = "TCP tunnels" if TCP in missing else "pools"
        extension = TCP if TCP in missing else POOL
        self.fail(f"The server {self.settings.server.host_with_port} does not support {what}"
                  f" (it did not grant the {extension} extension).")

    def on_closed(self, status, code, reason, reached=True, failure=None):
        if self.stopping:
            return
        message = self._explain(status, code, reason, reached, failure)
        if self.name is None or status in FINAL_STATUSES:
            self.fail(message)
            return
        delay = backoff_delay(self.failed_attempts, self.rand)
        self.failed_attempts += 1
        self.status = "reconnecting"
        if self.inspected is not None:
            self.inspected.reconnecting()
        self.err.write(f"tpot: {message} Reconnecting in {delay:.0f} s.\n")
        self.err.flush()
        self.reactor.callLater(delay, self.connect)

    def _explain(self, status, code, reason, reached, failure):
        factory = self.factory
        if not reached:
            return explain.unreachable(self.settings.server, failure)
        if status is not None:
            return explain.refusal(status, factory.refused_headers, self.settings, factory.subdomain,
                                   reconnecting=self.name is not None)
        if factory is None or not factory.greeted_here:
            return explain.lost_before_open(self.settings.server, factory.lost_reason if factory else None)
        reason_text = f": {printable_text(reason)}" if reason else ""
        return f"The connection to the server was lost (code {code}){reason_text}."

    def fail(self, message):
        if self.exit_code == EXIT_OK:
            self.err.write(f"tpot: {message}\n")
            self.err.flush()
            self.exit_code = EXIT_FAILURE
        self.stopping = True
        if self.reactor.running:
            self.reactor.stop()

    def stop(self):
        """Ctrl-C or SIGTERM: close the tunnel cleanly (briefly), then let the reactor stop."""
        self.stopping = True
        protocol = self.factory.current if self.factory is not None else None
        if protocol is None or not protocol.tunnel_open():
            return None
        done = defer.Deferred()
        protocol.on_lost = lambda: done.called or done.callback(None)
        protocol.sendClose(code=CLOSE_NORMAL, reason="client stopped")
        timeout = self.reactor.callLater(CLOSE_WAIT, lambda: done.called or done.callback(None))
        done.addBoth(lambda _: timeout.active() and timeout.cancel())
        return done
