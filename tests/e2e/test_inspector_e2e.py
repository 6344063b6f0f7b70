"""End-to-end: the client's traffic inspector and its JSON API, with a real twistd server, a
real `tpot http` and a recording target on 127.0.0.1, asked as curl would ask it.

Every wait has a deadline; every process and thread started here is stopped at teardown.
"""

import base64
import hashlib
import http.client
import json
import re
import socket
import time

import pytest

from .conftest import DOMAIN, HOST, IO_TIMEOUT, run_tpot, start_connected, stream_chunks
from .inspecting import Api, hook_target, inspected, visit  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(90)


def test_the_client_prints_its_inspector_and_it_lists_each_exchange(server, hook_target, inspected):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", inspected.inspector_url)
    api = Api(inspected.inspector_url)
    assert visit(server, "GET", "/page?q=a%20b&n=1")[0] == 200
    assert visit(server, "POST", "/hook", b'{"event": "paid", "n": [1, 2]}', {"Content-Type": "application/json"})[0] == 200
    assert visit(server, "POST", "/hook", b"a=1&b=two+words", {"Content-Type": "application/x-www-form-urlencoded"})[0] == 200
    form, posted, got = api.wait_for(3)
    assert [(e["method"], e["path"], e["status"]) for e in (got, posted, form)] == [
        ("GET", "/page?q=a%20b&n=1", 200), ("POST", "/hook", 200), ("POST", "/hook", 200)]
    assert got["tunnel"] == "insp" and got["visitor"] == HOST and got["duration"] >= 0
    assert posted["request_size"] == 30 and got["response_size"] == 2

    status, detail = api.json("GET", f"/api/requests/{posted['id']}")
    assert status == 200
    assert base64.b64decode(detail["request"]["body"]) == b'{"event": "paid", "n": [1, 2]}'
    assert detail["request"]["display"]["body"]["kind"] == "json"
    assert '"event": "paid"' in detail["request"]["display"]["body"]["text"]
    raw = base64.b64decode(detail["request"]["raw"])
    assert raw.startswith(b"POST /hook HTTP/1.1\r\n") and b"\r\nX-Forwarded-For: 127.0.0.1\r\n" in raw
    assert detail["response"]["display"]["start_line"].startswith("HTTP/1.") and " 200 " in detail["response"]["display"]["start_line"]
    assert "curl" in detail["curl"] and "/hook" in detail["curl"]
    _, form_detail = api.json("GET", f"/api/requests/{form['id']}")
    assert form_detail["request"]["display"]["body"]["fields"] == [["a", "1"], ["b", "two words"]]
    _, got_detail = api.json("GET", f"/api/requests/{got['id']}")
    assert got_detail["query"] == [["q", "a b"], ["n", "1"]]

    status, tunnels = api.json("GET", "/api/tunnels")
    assert tunnels["tunnels"] == [{"name": "insp", "proto": "http", "public_url": f"http://insp.{DOMAIN}:{server.port}",
                                   "target": f"http://{hook_target.address}", "status": "online"}]
    assert [e["id"] for e in api.requests("?method=get")] == [got["id"]]
    assert [e["id"] for e in api.requests("?path=hook&limit=1")] == [form["id"]]
    assert api.requests("?status=4xx") == [] and len(api.requests("?status=2xx")) == 3
    assert api.json("GET", "/api/requests?status=teapot")[0] == 400
    assert api.json("GET", "/api/requests/999999")[0] == 404


def test_replay_sends_the_same_request_again_and_edits_reach_the_target(server, hook_target, inspected):
    api = Api(inspected.inspector_url)
    body = b'{"webhook": "charge.succeeded", "amount": 4200}'
    before = len(hook_target.hooks)
    visit(server, "POST", "/hook", body, {"Content-Type": "application/json", "X-Signature": "abc"})
    (original,) = api.wait_for(1)
    status, replayed = api.replay(original["id"])
    assert status == 200, replayed
    assert (replayed["replay_of"], replayed["status"], replayed["method"]) == (original["id"], 200, "POST")
    first, second = hook_target.hooks[before:]
    assert second[3] == first[3] == hashlib.sha256(body).hexdigest()
    assert second[2]["X-Signature"] == "abc" and second[2]["X-Forwarded-For"] == HOST
    assert second[2]["Host"] == first[2]["Host"] and second[2]["X-Forwarded-Host"] == first[2]["X-Forwarded-Host"]

    edits = {"headers": [["Content-Type", "application/json"], ["X-Edited", "yes"], ["X-Forwarded-For", "6.6.6.6"]],
             "body": base64.b64encode(b'{"edited": true}').decode()}
    status, edited = api.replay(original["id"], edits)
    assert status == 200 and edited["replay_of"] == original["id"], edited
    third = hook_target.hooks[-1]
    assert third[2]["X-Edited"] == "yes" and third[3] == hashlib.sha256(b'{"edited": true}').hexdigest()
    # As for a visitor: a chain the edit claims is kept, the address the client vouches for ends it.
    assert third[2]["X-Forwarded-For"].rsplit(",", 1)[-1].strip() == HOST
    assert [e["replay_of"] for e in api.requests()[:2]] == [original["id"], original["id"]]


def test_acting_needs_the_token_and_every_request_its_own_host(server, hook_target, inspected):
    api = Api(inspected.inspector_url)
    visit(server, "POST", "/hook", b"{}", {"Content-Type": "application/json"})
    (exchange,) = api.wait_for(1)
    before = len(hook_target.hooks)
    assert api.replay(exchange["id"], token=False)[0] == 403
    assert api.json("POST", f"/api/requests/{exchange['id']}/replay", headers={"X-TPoT-Token": "guess"})[0] == 403
    assert api.call("DELETE", "/api/requests")[0] == 403
    assert len(hook_target.hooks) == before and len(api.requests()) == 1
    for path in ("/", "/api/requests", f"/api/requests/{exchange['id']}", "/static/app.js"):
        status, _, body = api.call("GET", path, host=f"attacker.example:{api.port}")  # DNS rebinding
        assert status == 403 and b"curl" not in body, path
    assert api.call("GET", "/api/requests", host=f"localhost:{api.port}")[0] == 200
    status, headers, _ = api.call("GET", "/")
    assert status == 200 and "default-src 'self'" in headers["Content-Security-Policy"]
    assert api.call("DELETE", "/api/requests", headers={"X-TPoT-Token": api.token})[0] == 204
    assert api.requests() == []


def test_large_bodies_are_relayed_whole_and_kept_up_to_a_mebibyte(server, hook_target, inspected):
    api = Api(inspected.inspector_url)
    upload = bytes(range(256)) * (3 * 4096)  # 3 MiB
    status, answer = visit(server, "POST", "/sha256", upload)
    assert (status, answer.decode()) == (200, f"{hashlib.sha256(upload).hexdigest()} {len(upload)}")
    connection = http.client.HTTPConnection(HOST, server.port, timeout=IO_TIMEOUT)
    connection.request("GET", "/stream/5242880?seed=3", headers={"Host": server.host_for("insp")})
    download = connection.getresponse().read()
    connection.close()
    assert hashlib.sha256(download).hexdigest() == hashlib.sha256(_stream(5242880, 3)).hexdigest()
    got, posted = api.wait_for(2)
    _, detail = api.json("GET", f"/api/requests/{posted['id']}")
    assert detail["request"]["truncated"] and detail["request"]["body_size"] == len(upload)
    assert base64.b64decode(detail["request"]["body"]) == upload[:1024 * 1024]
    _, detail = api.json("GET", f"/api/requests/{got['id']}")
    assert detail["response"]["truncated"] and got["response_size"] == 5242880
    assert base64.b64decode(detail["response"]["body"]) == download[:1024 * 1024]
    assert api.replay(posted["id"])[0] == 409  # its body was not all kept


def test_the_live_stream_pushes_each_new_exchange(server, inspected):
    api = Api(inspected.inspector_url)
    with socket.create_connection((HOST, api.port), timeout=IO_TIMEOUT) as stream:
        stream.sendall(f"GET /api/events HTTP/1.1\r\nHost: {api.host}\r\n\r\n".encode())
        received = _read_until(stream, b"retry:")
        assert b"text/event-stream" in received
        visit(server, "GET", "/live")
        received += _read_until(stream, b"/live")
    event = re.search(rb"event: exchange\r?\ndata: ({.*})", received).group(1)
    assert json.loads(event)["path"] == "/live"


def test_a_taken_address_given_stops_the_client_with_one_sentence(server, hook_target, tmp_path):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_tpot(["http", hook_target.address, "-t", server.url, "--inspect", f"{HOST}:{port}"], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"tpot: The inspector cannot listen on {HOST}:{port}"), result.stderr
    assert "--no-inspect" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_no_inspect_prints_no_inspector(server, hook_target, tmp_path):
    client = start_connected(["http", hook_target.address, "-t", server.url, "--no-inspect"], tmp_path, server=server)
    try:
        assert client.inspector_url is None and client.log_lines(1, 0.5) == []
        assert visit(server, "GET", "/", name=client.url.split("//")[1].split(".")[0])[0] == 200
    finally:
        client.stop()


def _stream(n, seed):
    return b"".join(stream_chunks(n, seed))


def _read_until(sock, marker, timeout=IO_TIMEOUT):
    received, deadline = b"", time.monotonic() + timeout
    while marker not in received and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    assert marker in received, received[-500:]
    return received
