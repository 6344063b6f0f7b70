"""The `tpot` command: `tpot http TARGET -t SERVER`, printing the public URL when connected."""

import argparse
import sys

from twisted.internet import ssl

from tpot import __version__
from tpot.auth import make_authorization
from tpot.client.settings import ClientError, client_settings

EXIT_FAILURE = 1

REFUSALS = {
    400: "The server refused the request as invalid (400); check the subdomain.",
    401: "The server did not authorize the request (401); check your auth key.",
    404: "The server answered 404 Not Found; check the server URL.",
    409: "The subdomain is already in use (409); pick another with -s.",
    503: "The server cannot take another tunnel right now (503); try again later.",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ClientError(f"{message} (see tpot --help)")


def _parser():
    parser = _Parser(prog="tpot", description="Expose a local service through a TPoT server.")
    parser.add_argument("--version", action="version", version=f"tpot {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    http = commands.add_parser("http", help="expose a local HTTP service")
    http.add_argument("target", metavar="TARGET", help="8080, localhost:8080 or http://host:port")
    http.add_argument("-t", "--server", "--tpot-server", help="URL of the TPoT server (env TPOT_SERVER)")
    http.add_argument("-k", "--auth-key", help="the server's auth key (env TPOT_AUTH_KEY)")
    http.add_argument("-s", "--subdomain", help="ask for this subdomain")
    http.add_argument("--http-host", help="rewrite Host to this instead of the target's host:port")
    http.add_argument("--no-host-rewrite", action="store_true", help="pass Host through untouched")
    http.add_argument("-d", "--debug", action="store_true", help="log protocol details to stderr")
    return parser


def parse_command_line(argv):
    args = _parser().parse_args(argv)
    if args.command is None:
        raise ClientError("Say what to expose, for example: tpot http 8080 -t http://localhost:3000")
    return client_settings(
        args.target, server=args.server, auth_key=args.auth_key, subdomain=args.subdomain,
        http_host=args.http_host, no_host_rewrite=args.no_host_rewrite, debug=args.debug,
    )


class ClientRun:
    """Connects once and keeps the tunnel until it closes or the user stops it."""

    def __init__(self, settings, reactor, out=sys.stdout, err=sys.stderr):
        self.settings = settings
        self.reactor = reactor
        self.out = out
        self.err = err
        self.exit_code = 0
        self.greeted = False
        self.stopping = False

    def start(self):
        # Ctrl-C stops the reactor; the connection closing then is not a failure.
        self.reactor.addSystemEventTrigger("before", "shutdown", setattr, self, "stopping", True)
        from autobahn.twisted.websocket import connectWS

        from tpot.client.session import TunnelClientFactory

        headers = {}
        if self.settings.auth_key:
            headers["Authorization"] = make_authorization(self.settings.auth_key)
        factory = TunnelClientFactory(self.settings, self.reactor, headers, self.on_greeting, self.on_closed)
        factory.clientConnectionFailed = lambda connector, reason: self.fail(
            f"The server {self.settings.server.host_with_port} could not be reached."
        )
        context = None
        if self.settings.server.scheme == "https":
            context = ssl.optionsForClientTLS(self.settings.server.host)
        connectWS(factory, context)

    def on_greeting(self, name):
        self.greeted = True
        self.out.write(f"tpot connected\n{self.settings.public_url(name)}\n")
        self.out.flush()

    def on_closed(self, status, code, reason):
        if self.stopping:
            return
        if status in REFUSALS:
            self.fail(REFUSALS[status])
        elif status is not None:
            self.fail(f"The server refused the tunnel with HTTP status {status}.")
        elif not self.greeted:
            self.fail(f"The server {self.settings.server.host_with_port} closed the connection before the tunnel opened.")
        else:
            reason_text = f": {reason}" if reason else ""
            self.fail(f"The connection to the server was lost (code {code}){reason_text}.")

    def fail(self, message):
        if self.exit_code == 0:
            self.err.write(message + "\n")
            self.err.flush()
            self.exit_code = EXIT_FAILURE
        if self.reactor.running:
            self.reactor.stop()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = parse_command_line(argv)
    except ClientError as error:
        sys.stderr.write(f"tpot: {error}\n")
        return EXIT_FAILURE
    import txaio
    from twisted.internet import reactor

    txaio.use_twisted()
    txaio.set_global_log_level("debug" if settings.debug else "warn")
    if settings.debug:
        from twisted.logger import globalLogBeginner, textFileLogObserver

        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    run = ClientRun(settings, reactor)
    reactor.callWhenRunning(run.start)
    reactor.run()
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
