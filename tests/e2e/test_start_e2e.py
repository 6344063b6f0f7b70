"""End-to-end: `tpot start` runs every tunnel of a file in one process — two http tunnels
and a tcp one, through a real twistd server to real targets on 127.0.0.1 — with one
inspector for both http tunnels; a bad file stops it with one sentence.
"""

import hashlib

import pytest

from .conftest import CLIENT_TIMEOUT, HOST, Client, run_tpot
from .inspecting import Api, visit
from .test_tcp_e2e import Listener, echo, echo_through  # noqa: F401 (the fixture)

pytestmark = pytest.mark.timeout(120)

SECRET = "a-secret-for-the-db-tunnel-0123456789"


def write_file(tmp_path, server, target, echo):
    path = tmp_path / "tpot.toml"
    path.write_text(f"""\
server = "{server.url}"

[inspect]
addr = "{HOST}:0"

[tunnels.web]
addr = "{target.address}"
subdomain = "start-web"

[tunnels.api]
addr = "{target.address}"
subdomain = "start-api"
host_header = "api.internal"

[tunnels.db]
proto = "tcp"
addr = {echo.port}
subdomain = "start-db"
secret = "{SECRET}"
""")
    return path


def started(args, home, count):
    """`tpot ARGS` and its table: {tunnel: line}, and the inspector's address."""
    client = Client(args, home)
    lines = client.log_lines(count + 3 + (1 if count == 3 else 0), CLIENT_TIMEOUT)
    if not lines or lines[0] != f"tpot started {count} tunnel{'s' if count > 1 else ''}":
        client.stop()
        raise RuntimeError(f"tpot start did not start: {client.describe()}")
    table = {line.split()[0]: line for line in lines[1:1 + count]}
    inspector = next(line.removeprefix("inspector: ") for line in lines if line.startswith("inspector: "))
    return client, table, lines, inspector


def test_start_all_runs_two_http_tunnels_and_a_tcp_one_with_one_inspector(server, target, echo, tmp_path):
    config = write_file(tmp_path, server, target, echo)
    client, table, lines, inspector = started(["start", "--all", "--config", str(config), "-q"], tmp_path, 3)
    try:
        assert table["web"].split()[1:] == [f"http://start-web.{server.host_for('')[1:]}", "->", f"http://{target.address}"]
        assert f"http://start-api.{server.host_for('')[1:]}" in table["api"]
        assert "TCP tunnel start-db" in table["db"]
        assert any(line.startswith("db: connect with: tpot connect start-db") for line in lines)

        upload = bytes(range(256)) * 4096  # 1 MiB
        digest = hashlib.sha256(upload).hexdigest()
        for name in ("start-web", "start-api"):
            assert visit(server, "POST", "/sha256", upload, name=name) == (200, f"{digest} {len(upload)}".encode())
        status, echoed = visit(server, "GET", "/host", name="start-api")
        assert status == 200 and b"api.internal" in echoed

        listener = Listener(["start-db", "-t", server.url, "--secret", SECRET], tmp_path)
        try:
            payload = bytes(range(256)) * 2048
            assert echo_through(listener.port, payload) == hashlib.sha256(payload).hexdigest()
        finally:
            listener.client.stop()

        api = Api(inspector)
        _, tunnels = api.json("GET", "/api/tunnels")
        assert sorted((t["name"], t["proto"], t["status"]) for t in tunnels["tunnels"]) == [
            ("start-api", "http", "online"), ("start-db", "tcp", "online"), ("start-web", "http", "online")]
        seen = {(e["tunnel"], e["path"]) for e in api.wait_for(3)}
        assert seen == {("start-web", "/sha256"), ("start-api", "/sha256"), ("start-api", "/host")}
    finally:
        client.stop()


def test_start_by_name_runs_only_those(server, target, echo, tmp_path):
    config = write_file(tmp_path, server, target, echo)
    client, table, _, inspector = started(["start", "web", "--config", str(config), "-q"], tmp_path, 1)
    try:
        assert list(table) == ["web"]
        assert visit(server, "GET", "/", name="start-web")[0] == 200
        _, tunnels = Api(inspector).json("GET", "/api/tunnels")
        assert [t["name"] for t in tunnels["tunnels"]] == ["start-web"]
    finally:
        client.stop()


@pytest.mark.parametrize("text, sentence", [
    ('[tunnels.web]\naddr = 8000\ncolour = "red"\n', 'tunnel "web": unknown key "colour"'),
    ('[tunnels.web]\nproto = "udp"\naddr = 8000\n', 'tunnel "web"'),
    ("[tunnels.web\naddr = 8000\n", "not valid TOML: Expected"),
])
def test_a_bad_file_stops_start_up_with_one_sentence_naming_the_tunnel_and_the_key(server, tmp_path, text, sentence):
    path = tmp_path / "tpot.toml"
    path.write_text(f'server = "{server.url}"\n' + text)
    result = run_tpot(["start", "--all", "--config", str(path)], tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"tpot: {path}") and sentence in result.stderr, result.stderr
