"""End-to-end: the client staying up across server restarts and connection drops.

Real twistd servers and real `tpot` clients on 127.0.0.1; a server is restarted on the same
port, and a small TCP proxy written here stands between a client and the server where a
test needs to cut or stall the client's WebSocket without touching either process.
Every wait has a deadline; every process and thread started here is stopped at teardown.
"""

import http.client
import signal
import socket
import subprocess
import threading
import time

import pytest

from .conftest import (
    AUTH_KEY,
    DOMAIN,
    HOST,
    Server,
    run_tpot,
    start_connected,
    stop_process,
)

pytestmark = pytest.mark.timeout(120)

IO_TIMEOUT = 10.0
RECONNECT_TIMEOUT = 15.0  # backoff 1-1.5 s, 2-3 s, 4-6 s, 8-12 s: one of them lands by then
OTHER_KEY = "another-e2e-key-abcdefghijklmnopqrstuvwxyz"


# ---------------------------------------------------------------------------------------
# helpers


@pytest.fixture
def clients(tmp_path):
    """clients(server_url, target, name=None, key=None) -> a connected conftest Client."""
    started = []

    def start(server_url, target_address, name=None, key=None):
        # --quiet: these tests await "tpot reconnected" as the next line, not request-log lines.
        args = ["http", target_address, "-t", server_url, "--quiet"]
        if name:
            args += ["-s", name]
        if key:
            args += ["-k", key]
        client = start_connected(args, tmp_path)
        started.append(client)
        return client

    yield start
    for client in started:
        client.stop(signal.SIGKILL)


@pytest.fixture
def restart(tmp_path_factory):
    """restart(server, sig, auth_key=None) -> a new Server on the same port, started."""
    started = []

    def do(server, sig=signal.SIGTERM, auth_key=None):
        stop_process(server.proc, sig)
        assert server.proc.poll() is not None
        new = Server(tmp_path_factory.mktemp("restarted"), auth_key)
        new.port = server.port
        new.start()
        started.append(new)
        return new

    yield do
    for server in started:
        server.stop()


def visit_status(port, name, path="/", timeout=IO_TIMEOUT):
    """Status and body of one GET as a visitor of tunnel `name` on the server at `port`."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": f"{name}.{DOMAIN}:{port}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_status(port, name, status, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        got = visit_status(port, name)
        if got[0] == status:
            return got
        assert time.monotonic() < deadline, f"{name}: wanted {status}, still {got!r}"
        time.sleep(0.05)


def wait_reconnected(client, url, timeout=RECONNECT_TIMEOUT):
    """Waits for the client's next stdout line, which must be exactly "tpot reconnected: URL"."""
    line = client.next_line(timeout)
    assert line == f"tpot reconnected: {url}", f"no reconnection within {timeout} s: {client.describe()}"
    assert client.proc.poll() is None, client.describe()


class Proxy:
    """A TCP relay on 127.0.0.1 in front of `upstream_port`.

    mode "forward" relays new connections; "refuse" accepts and closes them at once.
    `cut()` closes every relayed connection on both sides; `stall()` keeps them open but
    drops every byte either way (a dead network path), still passing on closes;
    `cut_client_side()` closes only the client's side and leaves the server's side open
    and silent (a half-open connection the server cannot see is gone).
    """

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.mode = "forward"
        self.lock = threading.Lock()
        self.pairs = []
        self.closed = False
        self.accepted = 0
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://{DOMAIN}:{self.port}"

    def _accept_loop(self):
        while not self.closed:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.mode != "forward":
                downstream.close()
                continue
            try:
                upstream = socket.create_connection((HOST, self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                downstream.close()
                continue
            pair = {"sockets": (downstream, upstream), "stalled": False, "half": False}
            with self.lock:
                self.pairs.append(pair)
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(pair, source, sink), daemon=True).start()

    def _pump(self, pair, source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if not pair["stalled"]:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            # The server's side ending closes everything, even after cut_client_side().
            self._close(pair, closing_proxy=source is pair["sockets"][1])

    def _close(self, pair, closing_proxy=False):
        sockets = pair["sockets"][:1] if pair["half"] and not closing_proxy else pair["sockets"]
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if sockets is pair["sockets"]:
            with self.lock:
                if pair in self.pairs:
                    self.pairs.remove(pair)

    def open_pairs(self):
        with self.lock:
            return list(self.pairs)

    def cut(self):
        for pair in self.open_pairs():
            self._close(pair)

    def stall(self):
        for pair in self.open_pairs():
            pair["stalled"] = True

    def cut_client_side(self):
        for pair in self.open_pairs():
            pair["stalled"] = pair["half"] = True
            self._close(pair)

    def close(self):
        self.closed = True
        self.listener.close()
        for pair in self.open_pairs():
            self._close(pair, closing_proxy=True)
        self.thread.join(5)


@pytest.fixture
def proxy_to():
    proxies = []

    def make(port):
        proxy = Proxy(port)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


# ---------------------------------------------------------------------------------------
# 1, 2. the server restarting under a running client


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_client_comes_back_after_the_server_restarts(server, target, clients, restart, sig):
    client = clients(server.url, target.address, name="again")
    url = f"http://again.{DOMAIN}:{server.port}"
    assert client.url == url
    assert visit_status(server.port, "again") == (200, b"ok")

    new = restart(server, sig)
    wait_reconnected(client, url)
    assert visit_status(new.port, "again") == (200, b"ok")
    assert client.new_lines(within=1.5) == [], "more than one line after reconnecting"
    assert client.proc.poll() is None
    err = client.stderr()
    assert "Reconnecting" in err and "Traceback" not in err, err
    assert f"reconnected: {url}" not in err
    assert visit_status(new.port, "again") == (200, b"ok")


# ---------------------------------------------------------------------------------------
# 3. the server dropping a silent tunnel (its liveness timer), without a restart


def test_tunnel_dropped_by_the_server_liveness_timer_comes_back(server, target, clients, proxy_to):
    proxy = proxy_to(server.port)
    client = clients(proxy.url, target.address, name="quiet")
    url = f"http://quiet.{DOMAIN}:{proxy.port}"
    assert client.url == url
    assert visit_status(server.port, "quiet") == (200, b"ok")

    proxy.stall()  # neither side hears the other; only the server's 30 s timer can notice
    started = time.monotonic()
    wait_reconnected(client, url, timeout=30 + 10)
    # The server's timer (30 s), not the client's ping timeout (up to 15 + 30 s), ended it.
    assert time.monotonic() - started < 40
    assert "silent" in server.log(), server.log()[-2000:]
    assert visit_status(server.port, "quiet") == (200, b"ok")
    assert client.new_lines(within=1.0) == []


def test_half_open_drop_is_retried_through_409_until_the_server_lets_go(server, target, clients, proxy_to):
    """The client sees its connection gone; the server does not, and keeps the name attached
    to the old tunnel (409) until its liveness timer drops it, then reserves it for the
    client, whose next attempt takes it back."""
    proxy = proxy_to(server.port)
    client = clients(proxy.url, target.address, name="halfopen")
    url = f"http://halfopen.{DOMAIN}:{proxy.port}"
    assert visit_status(server.port, "halfopen") == (200, b"ok")

    proxy.cut_client_side()
    # The client's pings reached the server at most 15 s ago: it holds the name for 15 s more.
    assert client.wait_stderr("(409)", 5), client.describe()
    assert client.proc.poll() is None, client.describe()
    wait_reconnected(client, url, timeout=30 + 24 + 5)
    assert "silent" in server.log(), server.log()[-2000:]
    assert visit_status(server.port, "halfopen") == (200, b"ok")
    assert client.new_lines(within=1.0) == []
    err = client.stderr().strip().splitlines()
    assert err and all("Reconnecting" in line for line in err), err


# ---------------------------------------------------------------------------------------
# 4. the name is kept for its client across a network-level drop


def test_name_is_reclaimed_after_a_network_drop_and_refused_to_others(
    server, target, clients, proxy_to, tmp_path
):
    proxy = proxy_to(server.port)
    client = clients(proxy.url, target.address, name="keep")
    url = f"http://keep.{DOMAIN}:{proxy.port}"
    assert client.url == url
    assert visit_status(server.port, "keep") == (200, b"ok")

    proxy.mode = "refuse"
    proxy.cut()
    assert client.wait_stderr("Reconnecting", 5), client.describe()
    status, body = wait_status(server.port, "keep", 503)
    assert b"not connected" in body

    # While its client is away, the name is not for anyone else (another user: another home,
    # without the reclaim token this one keeps).
    elsewhere = tmp_path / "someone-else"
    elsewhere.mkdir()
    other = run_tpot(["http", target.address, "-t", server.url, "-s", "keep"], elsewhere)
    assert other.returncode == 1, (other.returncode, other.stdout, other.stderr)
    assert other.stdout == ""
    assert "held for another client's dropped tunnel" in other.stderr, other.stderr
    assert len(other.stderr.strip().splitlines()) == 1, other.stderr

    proxy.mode = "forward"
    wait_reconnected(client, url)
    assert visit_status(server.port, "keep") == (200, b"ok")
    assert client.new_lines(within=1.0) == []
    # And it still holds it.
    again = run_tpot(["http", target.address, "-t", server.url, "-s", "keep"], elsewhere)
    assert again.returncode == 1 and "already in use" in again.stderr


# ---------------------------------------------------------------------------------------
# 5. Ctrl-C and SIGTERM: exit 0 at once, and the name is free at once


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_the_client_exits_0_and_frees_the_name(server, target, clients, sig):
    client = clients(server.url, target.address, name="leaving")
    assert visit_status(server.port, "leaving") == (200, b"ok")
    started = time.monotonic()
    client.proc.send_signal(sig)
    try:
        code = client.proc.wait(3)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the client did not exit within 3 s of {sig.name}: {client.describe()}")
    assert code == 0, client.describe()
    assert time.monotonic() - started < 3
    assert "Traceback" not in client.stderr()
    # The name is free right away, not reserved for 60 s.
    successor = clients(server.url, target.address, name="leaving")
    assert successor.url == f"http://leaving.{DOMAIN}:{server.port}"
    assert visit_status(server.port, "leaving") == (200, b"ok")


def test_ctrl_c_while_waiting_to_reconnect_exits_0(server, target, clients):
    client = clients(server.url, target.address, name="waiting")
    stop_process(server.proc, signal.SIGKILL)
    assert client.wait_stderr("Reconnecting", 5), client.describe()
    time.sleep(0.3)
    client.proc.send_signal(signal.SIGINT)
    try:
        code = client.proc.wait(3)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the client did not exit within 3 s of SIGINT: {client.describe()}")
    assert code == 0, client.describe()
    assert "Traceback" not in client.stderr()


# ---------------------------------------------------------------------------------------
# 6. a key the restarted server no longer accepts is final


def test_wrong_key_after_the_server_restarts_is_final(auth_server, target, clients, restart):
    client = clients(auth_server.url, target.address, name="locked", key=AUTH_KEY)
    assert visit_status(auth_server.port, "locked") == (200, b"ok")

    restart(auth_server, signal.SIGTERM, auth_key=OTHER_KEY)
    try:
        code = client.proc.wait(RECONNECT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the client kept retrying with a refused key: {client.describe()}")
    assert code == 1, client.describe()
    lines = client.stderr().strip().splitlines()
    assert lines[-1] == "tpot: The server did not accept the auth key (401); check -k or TPOT_AUTH_KEY.", lines
    assert all("Reconnecting" in line for line in lines[:-1]), lines
    assert client.new_lines(within=0.5) == []  # nothing more on stdout, no "reconnected"
