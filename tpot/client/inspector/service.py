"""The inspector of one client process: its exchanges, the tunnels it watches, its token,
and the loopback port its page and API are served on (tpot.client.inspector.api)."""

import secrets

from twisted.internet import error
from twisted.web import server

from tpot.client.inspector.api import BoundedRequest, Root
from tpot.client.inspector.capture import ConversationCapture, ExchangeStore
from tpot.client.settings import ClientError
from tpot.client.target import TargetConnector
from tpot.protocol.codec import TCP

# Ports tried in turn for the default address when the one before is taken.
SEARCHED_PORTS = 10


class InspectedTunnel:
    """One tunnel as the inspector knows it: its settings, the name the server gave it
    (None until greeted), and a connection maker to its target for replays."""

    def __init__(self, inspector, settings, reactor):
        self.inspector = inspector
        self.settings = settings
        self.name = None
        self.status = "starting"
        self.connector = TargetConnector.for_settings(reactor, settings)

    @property
    def proto(self):
        return "tcp" if self.settings.kind == TCP else "http"

    @property
    def public_host(self):
        return f"{self.name}.{self.settings.server.host_with_port}" if self.name else None

    @property
    def public_url(self):
        return self.settings.public_url(self.name) if self.name else None

    @property
    def target(self):
        target = self.settings.target
        return f"{target.scheme}://{target.host_with_port}" if self.proto == "http" else target.host_with_port

    def capture(self, visitor):
        return ConversationCapture(self.inspector.store, self, visitor)

    def online(self, name):
        self.name = name
        self.status = "online"

    def reconnecting(self):
        self.status = "reconnecting"


class Inspector:
    """`settings`: the InspectSettings (address, whether to search for a free port, how
    many exchanges to keep)."""

    def __init__(self, settings, reactor):
        self.settings = settings
        self.reactor = reactor
        self.store = ExchangeStore(keep=settings.keep)
        self.tunnels = []
        self.token = secrets.token_urlsafe(24)
        self.listen_host = settings.host
        self.port = None
        self._listening = None

    def watch(self, settings):
        """The InspectedTunnel of a tunnel with these settings; TCP tunnels are listed, not inspected."""
        tunnel = InspectedTunnel(self, settings, self.reactor)
        self.tunnels.append(tunnel)
        return tunnel

    @property
    def url(self):
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"http://{host}:{self.port}"

    def listen(self):
        """Start serving; ClientError (one sentence) when no port can be had."""
        site = server.Site(Root(self))
        site.requestFactory = BoundedRequest
        site.noisy = False
        site.log = lambda request: None  # the request log is the tunnel's, not the page's
        ports = range(self.settings.port, self.settings.port + (SEARCHED_PORTS if self.settings.search else 1))
        for port in ports:
            try:
                self._listening = self.reactor.listenTCP(port, site, interface=self.settings.host)
            except error.CannotListenError as failure:
                last = failure
                continue
            self.port = self._listening.getHost().port
            return self.url
        raise ClientError(self._no_port_message(ports, last))

    def _no_port_message(self, ports, failure):
        where = f"{self.settings.host}:{ports[0]}" + (f" to {ports[-1]}" if len(ports) > 1 else "")
        why = getattr(failure.socketError, "strerror", None) or "it is taken"
        return (f"The inspector cannot listen on {where} ({why}); give another address with --inspect"
                " or turn it off with --no-inspect.")

    def stop(self):
        if self._listening is not None:
            return self._listening.stopListening()
        return None


def listen_inspector(inspector, err):
    """Serve `inspector`: True once it listens (warning on `err` when its address is not
    loopback), False when the default ports are all taken (the warning says the tunnels
    run without it); ClientError when an address the user gave cannot be had."""
    try:
        inspector.listen()
    except ClientError as error:
        if not inspector.settings.search:
            raise
        err.write(f"tpot: warning: {error} The tunnels run without it.\n")
        err.flush()
        return False
    if not inspector.settings.loopback:
        err.write(f"tpot: warning: the inspector at {inspector.url} is reachable from other machines;"
                  " anyone who can reach it sees your traffic.\n")
        err.flush()
    return True
