"""End-to-end: a target that is not there yet, comes up, goes away again, or drops a
request, with a real twistd server, real clients and real targets on 127.0.0.1: what the
client says on stderr (once per change, with -q too), what its request log shows (the 502
with its reason), and a TARGET that is neither a port nor a name.
"""

import contextlib
import re
import signal
import socket

import pytest

from .conftest import CLIENT_TIMEOUT, HOST, IO_TIMEOUT, Client, Target, TargetHandler, raw, run_tpot, serving
from .inspecting import visit

pytestmark = pytest.mark.timeout(90)

SECRET = "a-secret-for-the-tcp-tunnel-0123456789"


def entry(path, outcome):
    """A request-log line for GET `path` with `outcome` (a regular expression), any duration."""
    return re.compile(rf"GET {re.escape(path)} (?:→|->) {outcome}  \d+ ms")


UNREACHABLE = r"502 target unreachable \(connection refused\)"


def next_entry(client, path, outcome):
    line = client.next_line(IO_TIMEOUT)
    assert line is not None and entry(path, outcome).fullmatch(line), (line, client.describe())


@contextlib.contextmanager
def target_at(port, handler=TargetHandler):
    target = Target(port)
    target.RequestHandlerClass = handler
    yield from serving(target)


def test_a_target_down_at_start_then_up_then_down_again(server, tpot_client, free_port):
    port = free_port()
    where = f"{HOST}:{port}"
    client = tpot_client(server, where, "later", ["--no-inspect"])
    not_yet = f"tpot: nothing is listening on {where} yet; visitors will get 502 until it is."
    assert client.wait_stderr(not_yet, IO_TIMEOUT), client.describe()
    assert visit(server, "GET", "/before", name="later")[0] == 502
    next_entry(client, "/before", UNREACHABLE)

    with target_at(port):
        assert visit(server, "GET", "/host", name="later") == (200, where.encode())
        next_entry(client, "/host", r"200  \d+ B")
        assert client.wait_stderr(f"tpot: the target {where} answers again.", IO_TIMEOUT), client.describe()

    for number in range(3):
        assert visit(server, "GET", f"/after{number}", name="later")[0] == 502
        next_entry(client, f"/after{number}", UNREACHABLE)
    assert client.stderr().splitlines() == [
        not_yet,
        f"tpot: the target {where} answers again.",
        f"tpot: the target {where} is not answering (connection refused); visitors get 502 until it is.",
    ]
    assert client.proc.poll() is None


def test_quiet_logs_no_502_but_still_warns(server, tpot_client, free_port):
    port = free_port()
    client = tpot_client(server, str(port), "quietly", ["-q", "--no-inspect"])
    assert client.wait_stderr(f"tpot: nothing is listening on localhost:{port} yet;", IO_TIMEOUT), client.describe()
    assert visit(server, "GET", "/", name="quietly")[0] == 502
    assert client.new_lines(1.0) == []


class DroppingHandler(TargetHandler):
    """Reads the request, then closes the connection without a word."""

    def do_GET(self):
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


def test_a_target_that_drops_the_request_is_logged_as_no_response(server, tpot_client, free_port):
    port = free_port()
    with target_at(port, DroppingHandler):
        client = tpot_client(server, f"{HOST}:{port}", "dropped", ["--no-inspect"])
        # The visitor sees what the target did: the connection closed, no response.
        assert raw(server.port, f"GET /drop HTTP/1.1\r\nHost: {server.host_for('dropped')}\r\n\r\n".encode()) == b""
        next_entry(client, "/drop", r"no response \(the connection closed\)")
    assert "tpot:" not in client.stderr()


@pytest.mark.parametrize("command, line", [
    ("tcp", "tpot: nothing is listening on localhost:{port} yet; connections through the tunnel will fail until it is."),
    ("start", "tpot: tunnel web: nothing is listening on localhost:{port} yet; visitors will get 502 until it is."),
])
def test_tpot_tcp_and_each_tunnel_of_tpot_start_check_their_target(server, tmp_path, free_port, command, line):
    port = free_port()
    config = tmp_path / "tpot.toml"
    config.write_text(f'server = "{server.url}"\ninspect = false\n\n[tunnels.web]\naddr = {port}\n')
    args = ["tcp", str(port), "-t", server.url, "--secret", SECRET] if command == "tcp" else [
        "start", "--all", "--config", str(config)]
    client = Client(args, tmp_path)
    try:
        assert client.wait_stderr(line.format(port=port), CLIENT_TIMEOUT), client.describe()
    finally:
        client.stop(signal.SIGKILL)


def test_a_target_that_is_neither_a_port_nor_a_name_is_one_sentence(tmp_path):
    result = run_tpot(["http", "notaport.invalid", "-t", "http://localhost:3000"], tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("tpot: The target 'notaport.invalid' is neither a port number nor a host name that"
                             " resolves; give a port (8080), host:port or a URL.\n")
