"""The client's status area on a real terminal: `tpot http` run inside tmux (120 x 40)
against a real twistd server and target on loopback, its screen read with `tmux
capture-pane`, stopped with Ctrl-C; and the plain lines it prints instead when piped or
told --log-format plain.  Every wait is bounded."""

import http.client
import shlex
import subprocess
import time

import pytest

from tests.support.tools import require_tool

from .conftest import DOMAIN, HOST, IO_TIMEOUT, STOP_TIMEOUT, TPOT, clean_env, exchange, start_connected

SCREEN_TIMEOUT = 15.0  # for the screen to show what is awaited
SHOW_CURSOR, HIDE_CURSOR = b"\x1b[?25h", b"\x1b[?25l"  # DECTCEM, as a terminal reads them


class Terminal:
    """One tmux server of its own (its socket in the test's directory) running one
    command in a 120 x 40 pane, which stays on screen after the command exits."""

    def __init__(self, tmux, home, command, stderr_to_file=True):
        self.tmux = tmux
        self.home = home
        self.socket = home / "tmux.sock"
        self.exit_path = home / "exit-status"
        self.stderr_path = home / "client.err"
        script = home / "run.sh"
        # stderr to a file, to read it whole afterwards (or on the terminal); the exit status
        # for the test.  The shell survives Ctrl-C (a handler, which the command does not
        # inherit) to write it.
        redirect = f" 2>{shlex.quote(str(self.stderr_path))}" if stderr_to_file else ""
        script.write_text(f"trap : INT\n{shlex.join(command)}{redirect}\n"
                          f"echo $? >{shlex.quote(str(self.exit_path))}\n")
        env = {k: v for k, v in clean_env(home).items() if not k.startswith("TMUX")}
        env["LANG"] = "C.UTF-8"
        self._tmux("new-session", "-d", "-s", "tpot", "-x", "120", "-y", "40", f"sh {shlex.quote(str(script))}", env=env)
        self._tmux("set-option", "-t", "tpot", "remain-on-exit", "on")
        # What the command writes, as bytes: tmux's own cursor flag is not kept once the pane is dead.
        self.output_path = home / "output"
        self._tmux("pipe-pane", "-o", "-t", "tpot", f"cat >{shlex.quote(str(self.output_path))}")

    def _tmux(self, *args, env=None):
        return subprocess.run([self.tmux, "-S", str(self.socket), *args], capture_output=True, text=True,
                              timeout=IO_TIMEOUT, check=True, env=env, cwd=str(self.home)).stdout

    def screen(self):
        return self._tmux("capture-pane", "-p", "-t", "tpot")

    def wait_for(self, *texts, timeout=SCREEN_TIMEOUT):
        """The screen once it shows every one of `texts` (fails after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if all(text in screen for text in texts) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        missing = [text for text in texts if text not in screen]
        assert not missing, f"not on screen: {missing}\n{screen}\nstderr: {self.stderr()}"
        return screen

    def cursor_visible(self):
        return self._tmux("display-message", "-p", "-t", "tpot", "#{cursor_flag}").strip() == "1"

    def cursor_shown_at_the_end(self, timeout=IO_TIMEOUT):
        """True once the last cursor command written is "show" (False if not within `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            output = self.output_path.read_bytes() if self.output_path.exists() else b""
            if output.rfind(SHOW_CURSOR) > output.rfind(HIDE_CURSOR) or time.monotonic() > deadline:
                return output.rfind(SHOW_CURSOR) > output.rfind(HIDE_CURSOR)
            time.sleep(0.1)

    def send_keys(self, *keys):
        self._tmux("send-keys", "-t", "tpot", *keys)

    def exit_status(self, timeout=STOP_TIMEOUT * 2):
        """The command's exit status once it has exited (None if not within `timeout` s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.exit_path.read_text().strip() if self.exit_path.exists() else ""
            if text:
                return int(text)
            time.sleep(0.1)
        return None

    def stderr(self):
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def close(self):
        subprocess.run([self.tmux, "-S", str(self.socket), "kill-server"], capture_output=True, timeout=IO_TIMEOUT)


@pytest.fixture
def terminal(tmp_path):
    """A factory: terminal(COMMAND) -> a Terminal running it; every one is closed at teardown."""
    tmux = require_tool("tmux", "tmux")
    opened = []

    def open_terminal(command, stderr_to_file=True):
        opened.append(Terminal(tmux, tmp_path, command, stderr_to_file))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


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
