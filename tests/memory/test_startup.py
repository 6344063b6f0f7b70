"""Start-up in memory: makeService listens before twistd starts anything (so that a port in
use stops it before its pid file), the start-up line once bound, the default log at info
level and above, and `twistd tpot --version`."""

import io

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from tpot import __version__
from tpot.server.logs import json_observer, without_debug
from tpot.server.tap import Options, makeService

KEY = "startup-test-key-0123456789abcdefghijkl"


class PortInUse(MemoryReactorClock):
    def listenTCP(self, port, factory, backlog=50, interface=""):
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


def options(*args):
    config = Options()
    config.parseOptions(["--domain", "localhost", *args])
    return config


def started(config, reactor):
    service = makeService(config, reactor)
    with capturedLogs() as events:
        service.startService()
    service.stopService()
    return [formatEvent(event) for event in events]


def test_make_service_listens_before_the_service_starts():
    reactor = MemoryReactorClock()
    makeService(options("--listen", "tcp:3000:interface=127.0.0.1"), reactor)
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [(3000, "127.0.0.1")]


def test_a_port_in_use_stops_make_service_with_one_sentence():
    with pytest.raises(SystemExit) as stopped:
        makeService(options("--listen", "tcp:3000:interface=127.0.0.1"), PortInUse())
    assert str(stopped.value) == "tpot: cannot listen on port 3000 on 127.0.0.1: Address already in use."


def test_the_start_up_line_once_started():
    # (MemoryReactor reports every IPv4 listener on 0.0.0.0, an IPv6 one as asked.)
    lines = started(options("--listen", r"tcp6:3000:interface=\:\:1", "--auth-key", KEY), MemoryReactorClock())
    line = f"tpot {__version__} serving localhost on port 3000 on ::1 (IPv6), auth on;"
    assert [message for message in lines if message.startswith("tpot ")] == [
        f"{line} connect with: tpot http PORT -t http://localhost:3000 -k KEY"]
    assert KEY not in "".join(lines)
    assert not [message for message in lines if "factory" in message.lower()], lines


def test_the_default_log_is_info_and_above_without_factory_announcements():
    out = io.StringIO()
    observe = without_debug(json_observer(out))
    observe({"log_format": "port announced", "log_level": LogLevel.debug})
    observe({"log_format": "Starting factory {factory!r}", "factory": object(), "log_level": LogLevel.info})
    observe({"log_format": "Stopping factory {factory!r}", "factory": object(), "log_level": LogLevel.info})
    observe({"log_format": "tunnel opened", "log_level": LogLevel.info})
    observe({"log_format": "refused", "log_level": LogLevel.warn})
    assert [line for line in out.getvalue().splitlines()] == [
        '{"level": "info", "message": "tunnel opened", "namespace": "", "time": 0}',
        '{"level": "warn", "message": "refused", "namespace": "", "time": 0}',
    ]


def test_version_is_tpots(capsys):
    with pytest.raises(SystemExit) as stopped:
        Options().parseOptions(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"tpot {__version__}\n"
