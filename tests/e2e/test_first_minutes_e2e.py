"""End-to-end: what a new user meets first — a crashed client that gets its own name back,
and failures that say what to fix — with a real twistd server and real clients.
"""

import re
import signal
import time

import pytest

from .conftest import run_tpot, start_connected
from .inspecting import visit

pytestmark = pytest.mark.timeout(90)


def test_a_client_killed_with_sigkill_gets_its_name_back_at_once_and_no_one_else_does(server, target, tmp_path):
    home, stranger = tmp_path / "me", tmp_path / "someone-else"
    home.mkdir()
    stranger.mkdir()
    args = ["http", target.address, "-t", server.url, "-s", "mine", "--no-inspect"]
    first = start_connected(args, home, server=server)
    first.stop(signal.SIGKILL)
    names = home / ".tpot" / "names"
    (kept,) = names.iterdir()
    assert oct(names.stat().st_mode & 0o777) == "0o700" and oct(kept.stat().st_mode & 0o777) == "0o600"

    refused = run_tpot(args, stranger)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert re.fullmatch(r"tpot: The subdomain mine is held for another client's dropped tunnel for about \d+ s more"
                        r" \(409\); wait, or pick another with -s\.\n", refused.stderr), refused.stderr

    again = start_connected(args, home, server=server)
    try:
        assert again.url == f"http://mine.{server.host_for('')[1:]}"
        assert visit(server, "GET", "/host", name="mine")[0] == 200
    finally:
        again.stop()


@pytest.mark.parametrize("server_url, sentence", [
    ("https://localhost:{port}", "tpot: The server localhost:{port} did not complete a TLS handshake ("),
    ("http://127.0.0.1:{port}", "tpot: The server at 127.0.0.1:{port} serves localhost and *.localhost, not 127.0.0.1"
                                " (404); use -t http://localhost:{port}."),
])
def test_a_wrong_server_url_says_which_to_use(server, target, tmp_path, server_url, sentence):
    result = run_tpot(["http", target.address, "-t", server_url.format(port=server.port)], tmp_path)
    assert result.returncode == 1 and result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(sentence.format(port=server.port)), result.stderr


def test_nothing_listening_at_the_server_names_the_host_and_port_tried(target, tmp_path, free_port):
    free_port = free_port()
    result = run_tpot(["http", target.address, "-t", f"http://localhost:{free_port}"], tmp_path)
    assert result.returncode == 1 and result.stderr == (
        f"tpot: The server localhost:{free_port} could not be reached (connection refused: nothing listens there).\n")


def test_no_key_for_a_server_that_needs_one_says_how_to_give_it(auth_server, target, tmp_path):
    result = run_tpot(["http", target.address, "-t", auth_server.url], tmp_path)
    assert result.returncode == 1
    assert result.stderr == "tpot: This server requires an auth key (401): pass -k KEY or set TPOT_AUTH_KEY.\n"


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGINT, signal.SIGINT], [signal.SIGTERM, signal.SIGINT]])
def test_ctrl_c_stops_cleanly_and_a_second_one_at_once(server, target, tmp_path, signals):
    client = start_connected(["http", target.address, "-t", server.url, "--no-inspect"], tmp_path, server=server)
    for number, sig in enumerate(signals):
        if number:
            time.sleep(0.05)
        client.proc.send_signal(sig)
    code = client.proc.wait(10)
    client.stop()
    # At once: by our handler (128 + N) or, once Twisted put the default back, by the signal itself.
    assert code in ((0,) if len(signals) == 1 else (0, 128 + signals[-1], -signals[-1]))
    assert "Traceback" not in client.stderr() and "ReactorNotRunning" not in client.stderr(), client.stderr()
