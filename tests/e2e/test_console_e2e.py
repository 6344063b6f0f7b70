"""The client's status area on a real terminal: `tpot http` run inside tmux (120 x 40)
against a real twistd server and target on loopback, its screen read with `tmux
capture-pane`, stopped with Ctrl-C; and the plain lines it prints instead when piped or
told --log-format plain.  Every wait is bounded."""

import http.client
import subprocess

import pytest

from tests.support.terminal import terminal  # noqa: F401 (a fixture)

from .conftest import DOMAIN, HOST, IO_TIMEOUT, TPOT, clean_env, exchange, start_connected

def get(server, name, path):
    """(status, body) of one GET for NAME's public host, on a connection of its own, on loopback."""
    return exchange(http.client.HTTPConnection(HOST, server.port, timeout=IO_TIMEOUT), "GET", path, server.host_for(name))


def test_the_status_area_counts_requests_and_ctrl_c_leaves_the_terminal_clean(server, target, terminal):
    public = f"http://screen.{DOMAIN}:{server.port}"
    term = terminal([TPOT, "http", target.address, "-t", server.url, "-s", "screen", "--inspect", f"{HOST}:0"])
    term.wait_for("Session Status  online", f"Forwarding      {public} -> http://{target.address}",
                  "Inspector       http://127.0.0.1:", "Latency ")
    assert not term.cursor_visible()  # hidden while the area is redrawn in place
    for i in range(3):
        assert get(server, "screen", f"/console/{i}") == (200, b"ok")
    screen = term.wait_for("Connections     total 3  open 0", "Requests        total 3  3/min  p50 ",
                           "GET /console/0 → 200  2 B", "GET /console/2 → 200  2 B")
    lines = screen.splitlines()
    # The status first, the request lines below it, as ngrok's console shows them.
    assert lines.index("HTTP requests") < [i for i, line in enumerate(lines) if "/console/0" in line][0]
    assert "tpot connected" in lines and public in lines  # the lines of old, printed above the area
    assert "ms" in term.wait_for("Latency ").split("Latency ", 1)[1].splitlines()[0]

    term.send_keys("C-c")
    assert term.exit_status() == 0, term.stderr()
    assert "Traceback" not in term.stderr() and term.stderr() == "", term.stderr()
    # tmux reads the pane's last output on its own time: awaited, bounded.
    term.wait_for("Session Status  stopped")
    assert term.cursor_shown_at_the_end()


def test_stderr_on_the_same_terminal_is_printed_above_the_area(server_factory, target, terminal):
    server = server_factory()
    term = terminal([TPOT, "http", target.address, "-t", server.url, "-s", "down", "--no-inspect"],
                    stderr_to_file=False)
    term.wait_for("Session Status  online")
    server.stop()  # the client's tunnel drops: it says so on stderr and retries
    screen = term.wait_for("Session Status  reconnecting", "tpot: The connection to the server was lost")
    lines = screen.splitlines()
    [message] = [i for i, line in enumerate(lines) if line.startswith("tpot: The connection")]
    assert message < lines.index("Session Status  reconnecting"), screen  # above the area, whole
    term.send_keys("C-c")
    assert term.exit_status() == 0
    assert "Traceback" not in term.screen()


def test_log_format_plain_on_a_terminal_prints_lines_only(server, target, terminal):
    term = terminal([TPOT, "http", target.address, "-t", server.url, "-s", "plainterm", "--no-inspect",
                     "--log-format", "plain"])
    public = f"http://plainterm.{DOMAIN}:{server.port}"
    term.wait_for(f"Forwarding {public} -> http://{target.address}")
    assert get(server, "plainterm", "/plain") == (200, b"ok")
    screen = term.wait_for("GET /plain → 200  2 B")
    assert screen.splitlines()[:3] == ["tpot connected", public, f"Forwarding {public} -> http://{target.address}"]
    assert "Session Status" not in screen and term.cursor_visible()
    term.send_keys("C-c")
    assert term.exit_status() == 0, term.stderr()


@pytest.mark.parametrize("options", [[], ["--log-format", "plain"]], ids=["piped", "plain"])
def test_piped_output_is_plain_lines_with_the_forwarding_line(server, target, tmp_path, options):
    client = start_connected(["http", target.address, "-t", server.url, "-s", "piped", "--no-inspect", *options],
                             tmp_path, server=server)
    try:
        assert client.forwarding == f"http://piped.{DOMAIN}:{server.port} -> http://{target.address}"
        for i in range(2):
            assert get(server, "piped", f"/piped/{i}") == (200, b"ok")
        lines = client.log_lines(2)
        assert [line.split("  ")[0] for line in lines] == ["GET /piped/0 → 200", "GET /piped/1 → 200"], lines
        assert not any("\x1b" in line for line in client.seen), client.seen
    finally:
        client.stop()


def test_an_unknown_log_format_is_one_sentence(tmp_path):
    result = subprocess.run([TPOT, "http", "8000", "-t", "http://localhost:1", "--log-format", "json"],
                            env=clean_env(tmp_path), capture_output=True, text=True, timeout=IO_TIMEOUT)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("tpot: argument --log-format: invalid choice: 'json'"), result.stderr
    assert "Traceback" not in result.stderr
