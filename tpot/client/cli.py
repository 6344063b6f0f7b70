"""The `tpot` command: `tpot http TARGET -t SERVER` (printing the public URL when
connected, and the inspector's address), `tpot tcp TARGET` (printing how to connect to
it), `tpot connect NAME` and `tpot start` (the tunnels of a file)."""

import argparse
import os
import sys

from tpot import __version__
from tpot.client.connect import ConnectSettings, connect_settings
from tpot.client.files import read_ca_file, read_config_file, read_start_file
from tpot.client.reclaims import ReclaimTokens
from tpot.client.settings import (
    DEFAULT_INSPECT_KEEP,
    DEFAULT_MAX_CONVERSATIONS,
    ENV_ACCESS_SECRET,
    ENV_AUTH_KEY,
    ENV_BASIC_AUTH,
    ENV_POOL,
    ENV_SERVER,
    EXIT_FAILURE,
    START_PATHS,
    ClientError,
    client_settings,
    config_warnings,
    inspect_settings,
)
from tpot.client.startfile import EXAMPLE, StartSettings, start_settings
from tpot.client.target import name_resolves
from tpot.protocol.codec import TCP
from tpot.protocol.heap import freeze_once_running

EXIT_SIGNALLED = 128  # and the signal's number, as a shell reports a process a signal ended
LOG_FORMATS = ("term", "plain")  # --log-format; the first is the default


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ClientError(f"{message} (see tpot --help)")


def _parser():
    parser = _Parser(prog="tpot", description="Expose a local service through a TPoT server.")
    parser.add_argument("--version", action="version", version=f"tpot {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_http(commands.add_parser("http", help="expose a local HTTP service"))
    _add_tcp(commands.add_parser("tcp", help="expose a local TCP service (SSH, a database)"))
    _add_connect(commands.add_parser("connect", help="reach a TCP tunnel from a local port or stdin/stdout"))
    _add_start(commands.add_parser(
        "start", help=f"run several tunnels from one file ({START_PATHS[0]})", epilog=f"The file, TOML:\n\n{EXAMPLE}"
        "\nor the same as YAML (tunnels: {web: {proto: http, addr: 8000}}) in a .yaml or .yml file.",
        formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def _add_server_options(command):
    command.add_argument("-t", "--server", "--tpot-server", help=f"URL of the TPoT server (env {ENV_SERVER})")
    command.add_argument("-k", "--auth-key", help=f"the server's auth key (env {ENV_AUTH_KEY})")
    command.add_argument("-d", "--debug", action="store_true", help="log protocol details to stderr")


def _add_output_options(command, what="request"):
    command.add_argument("-q", "--quiet", action="store_true",
                         help=f"do not print a line per {what} on stdout (and show no status area)")
    command.add_argument("--log-format", choices=LOG_FORMATS, default=LOG_FORMATS[0],
                         help="term (default): a live status area above the last requests when stdout is a"
                         " terminal, lines when piped; plain: lines only")


def _add_tunnel_options(command):
    command.add_argument("--max-conversations", metavar="N",
                         help=f"most visitors served at once; more are refused (default {DEFAULT_MAX_CONVERSATIONS})")
    command.add_argument("--pool", metavar="SECRET",
                         help="share the subdomain (-s) with every client giving this secret, at least 32"
                         f" characters; visitors are spread over them (env {ENV_POOL})")


def _add_http(http):
    http.add_argument("target", metavar="TARGET", help="8080, localhost:8080, http://host:port or https://host[:port]")
    _add_server_options(http)
    _add_tunnel_options(http)
    http.add_argument("-s", "--subdomain", help="ask for this subdomain")
    http.add_argument("--http-host", help="rewrite Host to this instead of the target's host:port")
    http.add_argument("--no-host-rewrite", action="store_true", help="pass Host through untouched")
    http.add_argument("--no-forwarded-headers", action="store_true",
                      help="do not add X-Forwarded-For/-Proto/-Host to requests")
    http.add_argument("--insecure", action="store_true",
                      help="https target: do not verify its certificate (self-signed development certificates)")
    http.add_argument("--ca", metavar="FILE", help="https target: trust the CA certificate(s) in this PEM file")
    _add_output_options(http)
    http.add_argument("--basic-auth", metavar="USER:PASS",
                      help=f"visitors must log in with these credentials (env {ENV_BASIC_AUTH})")
    http.add_argument("--allow-ip", metavar="CIDR", action="append", default=[],
                      help="only visitors from this address range (repeatable)")
    _add_inspect_options(http)


def _add_inspect_options(command):
    command.add_argument("--inspect", metavar="ADDR", help="serve the traffic inspector here"
                         " (default 127.0.0.1:4040, the next free port up to 4049)")
    command.add_argument("--no-inspect", action="store_true", help="do not serve the traffic inspector")
    command.add_argument("--inspect-keep", metavar="N",
                         help=f"exchanges the inspector keeps, default {DEFAULT_INSPECT_KEEP}")


def _add_start(start):
    start.add_argument("names", metavar="NAME", nargs="*", help="the tunnels of the file to start")
    start.add_argument("--all", action="store_true", help="start every tunnel of the file")
    start.add_argument("--config", metavar="PATH",
                       help=f"the file of tunnels, TOML or YAML (default {START_PATHS[0]}, or {START_PATHS[1]}"
                       f" or {START_PATHS[2]} when only that exists)")
    _add_output_options(start)
    start.add_argument("-d", "--debug", action="store_true", help="log protocol details to stderr")
    _add_inspect_options(start)


def _add_tcp(tcp):
    tcp.add_argument("target", metavar="TARGET", help="22, localhost:5432 or host:port")
    _add_server_options(tcp)
    _add_tunnel_options(tcp)
    tcp.add_argument("-s", "--subdomain", help="ask for this tunnel name")
    _add_output_options(tcp, "connection")
    tcp.add_argument("--secret", help="the access secret people connecting must give"
                     f" (env {ENV_ACCESS_SECRET}; default: a new random one, printed)")


def _add_connect(connect):
    connect.add_argument("name", metavar="NAME", help="the TCP tunnel's name")
    _add_server_options(connect)
    connect.add_argument("--secret", help=f"the tunnel's access secret, as tpot tcp printed it (env {ENV_ACCESS_SECRET})")
    connect.add_argument("--listen", metavar="[HOST:]PORT",
                         help="accept local connections here (host 127.0.0.1 unless given; port 0: any free port)")
    connect.add_argument("--stdio", action="store_true", help="relay stdin and stdout (for ssh -o ProxyCommand=...)")


def parse_command_line(argv, env=None, config=None, read_start=read_start_file):
    """The settings for `argv`, with `env` (os.environ unless given) and `config` (the
    config file's contents; read from ~/.tpot/config.json unless given).  For `tpot start`,
    `read_start(PATH or None)` gives (the file's path as shown, its text)."""
    return command_line(argv, env, config, read_start)[0]


def command_line(argv, env=None, config=None, read_start=read_start_file):
    """(settings, log format) for `argv`, as parse_command_line reads them; the log format
    is one of LOG_FORMATS (tpot connect has none: "plain")."""
    args = _parser().parse_args(argv)
    return _settings(args, env, config, read_start), getattr(args, "log_format", "plain")


def _settings(args, env, config, read_start):
    if args.command is None:
        raise ClientError("Say what to expose, for example: tpot http 8080 -t http://localhost:3000")
    env = os.environ if env is None else env
    config = read_config_file() if config is None else config
    if args.command == "connect":
        return connect_settings(
            args.name, server=args.server, auth_key=args.auth_key, secret=args.secret,
            listen=args.listen, stdio=args.stdio, debug=args.debug, env=env, config=config,
        )
    if args.command == "start":
        path, text = read_start(args.config)
        return start_settings(
            text, path, args.names, args.all, env=env, config=config, inspect_address=args.inspect,
            no_inspect=args.no_inspect, inspect_keep=args.inspect_keep, debug=args.debug, quiet=args.quiet,
            read_ca=read_ca_file, resolves=name_resolves,
        )
    if args.command == "tcp":
        return client_settings(
            args.target, server=args.server, auth_key=args.auth_key, subdomain=args.subdomain,
            debug=args.debug, quiet=args.quiet, kind=TCP, access_secret=args.secret, env=env, config=config,
            max_conversations=args.max_conversations, pool=args.pool,
        )
    return client_settings(
        args.target, server=args.server, auth_key=args.auth_key, subdomain=args.subdomain,
        http_host=args.http_host, no_host_rewrite=args.no_host_rewrite, debug=args.debug,
        no_forwarded_headers=args.no_forwarded_headers, insecure=args.insecure,
        ca=read_ca_file(args.ca) if args.ca else None,
        quiet=args.quiet, basic_auth=args.basic_auth, allow_ip=args.allow_ip, env=env, config=config,
        max_conversations=args.max_conversations, pool=args.pool,
        inspect=inspect_settings(args.inspect, args.no_inspect, args.inspect_keep), resolves=name_resolves,
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = read_config_file()
        for warning in config_warnings(config):
            sys.stderr.write(f"tpot: warning: {warning}\n")
        settings, log_format = command_line(argv, config=config)
    except ClientError as error:
        sys.stderr.write(f"tpot: {error}\n")
        return EXIT_FAILURE
    import txaio

    from tpot.protocol import eventloop

    eventloop.install()
    from twisted.internet import reactor

    txaio.use_twisted()
    txaio.set_global_log_level("debug" if settings.debug else "warn")
    if settings.debug:
        from twisted.logger import globalLogBeginner, textFileLogObserver

        # Keep stdout for "tpot connected" and the URL: by default the log would capture it.
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    if isinstance(settings, ConnectSettings):
        from tpot.client.connect import ConnectRun as Run
    elif isinstance(settings, StartSettings):
        from tpot.client.start import StartRun as Run
    else:
        from tpot.client.runner import ClientRun as Run

    console = _console(settings, log_format, reactor)
    # Named tunnels keep their reclaim tokens between runs; tpot connect opens none.
    if isinstance(settings, ConnectSettings):
        run = Run(settings, reactor)
    elif console is None:
        run = Run(settings, reactor, tokens=ReclaimTokens())
    else:
        # stderr on the same terminal is printed above the status area, not drawn over.
        err = console.above if sys.stderr.isatty() else sys.stderr
        run = Run(settings, reactor, out=console.above, err=err, tokens=ReclaimTokens(), console=console)
        reactor.callWhenRunning(console.start)
    reactor.callWhenRunning(_stop_on_signals, reactor, console)
    reactor.callWhenRunning(run.start)
    freeze_once_running(reactor)
    try:
        reactor.run()
    finally:
        if console is not None:
            console.stop()
    return run.exit_code


def _console(settings, log_format, reactor):
    """The status area (tpot.client.console) when it is wanted: stdout a terminal that
    can redraw in place (not TERM=dumb), the default --log-format, no --quiet, and no
    --debug log (its lines would be drawn over)."""
    if isinstance(settings, ConnectSettings) or log_format != "term" or settings.quiet or settings.debug:
        return None
    if not sys.stdout.isatty() or os.environ.get("TERM") == "dumb":
        return None
    from tpot.client.console import Console

    return Console(reactor, sys.stdout)


def _stop_on_signals(reactor, console=None):
    """SIGINT and SIGTERM stop the client cleanly (the tunnel closed, up to 2 s); a second
    one while stopping ends it at once.  Twisted's own handler would stop the reactor
    again, which raises ReactorNotRunning with a traceback.  A SIGINT that was ignored when
    the client started (a background job of a script) stays ignored, as for any program:
    stop such a client with SIGTERM."""
    import signal

    stopping = []

    def handle(signum, frame):
        if stopping:
            if console is not None:
                console.restore_cursor()
            sys.stdout.flush()
            os._exit(EXIT_SIGNALLED + signum)
        stopping.append(signum)
        reactor.callFromThread(reactor.stop)

    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, handle)


if __name__ == "__main__":
    sys.exit(main())
