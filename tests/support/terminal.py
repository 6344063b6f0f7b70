"""A real terminal for the client's status area: one tmux server of its own per test
(tests/e2e/test_console_e2e.py, test_tcp_e2e.py).  tmux is a test program (`make test`
installs it; the tests skip without it, and fail under CI=true).  Every wait is bounded.
"""

import shlex
import subprocess
import time

import pytest

from tests.support.processes import STOP_TIMEOUT, clean_env
from tests.support.tools import require_tool

IO_TIMEOUT = 10.0  # one tmux command, one awaited output
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
