"""What the inspector's end-to-end tests share: a target that records webhooks, a client
inspecting it, the inspector's API asked as curl would ask it, and visits through the tunnel."""

import hashlib
import http.client
import json
import re
import time
from urllib.parse import urlsplit

import pytest

from .conftest import HOST, IO_TIMEOUT, Target, TargetHandler, serving, start_connected


class HookHandler(TargetHandler):
    """Records every request to /hook (method, path, headers, sha256 of the body)."""

    def do_POST(self):
        if urlsplit(self.path).path != "/hook":
            return super().do_POST()
        body = self._read_body()
        self.server.hooks.append((self.command, self.path, dict(self.headers.items()), hashlib.sha256(body).hexdigest()))
        self._answer(json.dumps({"received": len(body)}), content_type="application/json")


class HookTarget(Target):
    def __init__(self):
        super().__init__()
        self.RequestHandlerClass = HookHandler
        self.hooks = []


@pytest.fixture(scope="module")
def hook_target():
    yield from serving(HookTarget())


@pytest.fixture
def inspected(server, hook_target, tmp_path):
    client = start_connected(["http", hook_target.address, "-t", server.url, "-s", "insp", "-q"], tmp_path, server=server)
    yield client
    client.stop()


class Api:
    """The inspector's API, asked with the Host a browser on its address would send."""

    def __init__(self, url):
        parts = urlsplit(url)
        self.port = parts.port
        self.host = f"{parts.hostname}:{parts.port}"
        page = self.call("GET", "/")[2].decode()
        self.token = re.search(r'<meta name="tpot-token" content="([^"]+)"', page).group(1)

    def call(self, method, path, body=None, headers=None, host=None):
        connection = http.client.HTTPConnection(HOST, self.port, timeout=IO_TIMEOUT)
        try:
            connection.request(method, path, body=body, headers={"Host": host or self.host, **(headers or {})})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def json(self, method, path, **options):
        status, _, body = self.call(method, path, **options)
        return status, json.loads(body) if body else None

    def requests(self, query=""):
        status, answer = self.json("GET", f"/api/requests{query}")
        assert status == 200, answer
        return answer["requests"]

    def wait_for(self, count, timeout=IO_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.requests()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"the inspector has {self.requests()} after {timeout} s, not {count} exchanges")

    def replay(self, exchange_id, edits=None, token=True):
        headers = {"X-TPoT-Token": self.token} if token else {}
        body = json.dumps(edits).encode() if edits is not None else b""
        return self.json("POST", f"/api/requests/{exchange_id}/replay", body=body,
                         headers={**headers, "Content-Type": "application/json"})


def visit(server, method, path, body=None, headers=None, name="insp"):
    connection = http.client.HTTPConnection(HOST, server.port, timeout=IO_TIMEOUT)
    try:
        connection.request(method, path, body=body, headers={"Host": server.host_for(name), **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
