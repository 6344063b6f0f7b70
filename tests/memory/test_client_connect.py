"""`tpot connect`: its settings and command line, and its relay in memory, against a fake
WebSocket server and against the whole in-memory server with a TCP tunnel."""

import io

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.python.failure import Failure

from tests.support.memory import (
    BINARY,
    CLOSE,
    TEXT,
    FrameReader,
    MemoryTransport,
    close_payload,
    connect,
    data,
    encode_frame,
    settle,
    signal,
    websocket_accept,
)
from tpot.client import cli
from tpot.client.connect import (
    CLOSE_WAIT,
    ConnectRun,
    ConnectSettings,
    Outcome,
    connect_settings,
    explain,
    parse_listen,
)
from tpot.client.settings import ClientError
from tpot.protocol import auth

SECRET = "s3cret-" * 6
KEY = "k" * 40


# Settings.


def settings(*args, env=None, config=None, **options):
    options.setdefault("server", "http://localhost:3000")
    if not args:
        args = ("ssh",)
    if "listen" not in options and "stdio" not in options:
        options["stdio"] = True
    return connect_settings(*args, env=env or {}, config=config or {}, **options)


def test_the_secret_is_what_is_proved():
    result = settings(secret=SECRET, auth_key=KEY)
    assert result == ConnectSettings(result.server, "ssh", SECRET, None, False, key_is_secret=True)
    assert result.websocket_url == "ws://localhost:3000/connect-tpot?subdomain=ssh"


def test_the_auth_key_serves_without_a_secret():
    assert settings(auth_key=KEY).key == KEY
    assert not settings(auth_key=KEY).key_is_secret
    assert settings(env={"TPOT_AUTH_KEY": KEY}).key == KEY
    assert settings(config={"authKey": KEY}).key == KEY


def test_the_secret_may_come_from_the_environment():
    assert settings(env={"TPOT_ACCESS_SECRET": SECRET, "TPOT_AUTH_KEY": KEY}).key == SECRET


def test_the_server_may_come_from_the_environment_or_the_config_file():
    assert settings(server=None, secret=SECRET, env={"TPOT_SERVER": "https://tpot.example"}).websocket_url == (
        "wss://tpot.example/connect-tpot?subdomain=ssh")
    assert settings(server=None, secret=SECRET, config={"tpotServer": "tpot.example:8000"}).server.port == 8000


def test_names_are_lower_cased():
    assert settings("SSH", secret=SECRET).name == "ssh"


@pytest.mark.parametrize("text, expected", [
    ("2222", ("127.0.0.1", 2222)),
    ("0", ("127.0.0.1", 0)),
    ("0.0.0.0:2222", ("0.0.0.0", 2222)),
    ("localhost:5432", ("localhost", 5432)),
    ("[::1]:2222", ("::1", 2222)),
])
def test_listen_addresses(text, expected):
    assert parse_listen(text) == expected
    assert settings(secret=SECRET, listen=text, stdio=False).listen == expected


@pytest.mark.parametrize("text", ["", "ssh", "70000", "host:", ":22", "host:22:33", "[::1]"])
def test_invalid_listen_addresses(text):
    with pytest.raises(ClientError, match="listen address"):
        parse_listen(text)


@pytest.mark.parametrize("options, message", [
    (dict(), "Give the tunnel's access secret with --secret (tpot tcp prints it) or the server's auth key with -k."),
    (dict(secret="short"), "The access secret must be 32 to 256 printable characters without spaces."),
    (dict(secret=SECRET, server=None), "No server given"),
    (dict(secret=SECRET, listen="2222", stdio=True), "Give exactly one of --listen [HOST:]PORT and --stdio."),
    (dict(secret=SECRET, stdio=False), "Give exactly one of --listen [HOST:]PORT and --stdio."),
    (dict(secret=SECRET, server="ftp://x"), "The server 'ftp://x' is not valid"),
])
def test_settings_errors_are_one_sentence(options, message):
    with pytest.raises(ClientError) as error:
        settings(**options)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("name", ["-ssh", "a" * 25, "a.b", ""])
def test_invalid_names(name):
    with pytest.raises(ClientError, match="tunnel name"):
        settings(name, secret=SECRET)


def test_the_command_line():
    result = cli.parse_command_line(["connect", "db", "-t", "http://localhost:3000", "--secret", SECRET,
                                     "--listen", "5433", "-d"], env={}, config={})
    assert (result.name, result.key, result.listen, result.debug) == ("db", SECRET, ("127.0.0.1", 5433), True)


def test_the_command_line_reads_the_environment_and_the_config_file(tmp_path, monkeypatch):
    (tmp_path / ".tpot").mkdir()
    (tmp_path / ".tpot" / "config.json").write_text('{"tpotServer": "https://tpot.example"}')
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TPOT_ACCESS_SECRET", SECRET)
    result = cli.parse_command_line(["connect", "db", "--stdio"])
    assert (result.server.host, result.key, result.key_is_secret) == ("tpot.example", SECRET, True)


def test_command_line_errors_exit_1_with_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no config file
    monkeypatch.delenv("TPOT_ACCESS_SECRET", raising=False)
    monkeypatch.delenv("TPOT_AUTH_KEY", raising=False)
    assert cli.main(["connect", "ssh", "-t", "http://localhost:3000", "--stdio"]) == 1
    assert capsys.readouterr().err == (
        "tpot: Give the tunnel's access secret with --secret (tpot tcp prints it)"
        " or the server's auth key with -k.\n"
    )
    assert cli.main(["connect"]) == 1
    assert "NAME" in capsys.readouterr().err


# What the user is told.


@pytest.mark.parametrize("outcome, message", [
    (Outcome(False), "the server localhost:3000 could not be reached."),
    (Outcome(True, status=401), "the server refused the connection to ssh: 401, check --secret or -k."),
    (Outcome(True, status=404), "the server refused the connection to ssh: 404, it is not a TCP tunnel"),
    (Outcome(True, status=503), "the server refused the connection to ssh: 503, the tunnel is not connected"),
    (Outcome(True, status=502), "the server refused the connection to ssh: 502."),
    (Outcome(True, code=1006), "the server localhost:3000 closed the connection before the WebSocket opened."),
    (Outcome(True, True, code=4502), "the tunnel's client could not reach its target."),
    (Outcome(True, True, code=4503, reason="The tunnel closed."), "the tunnel ssh closed the connection (4503"),
    (Outcome(True, True, code=1006), "the connection to the server was lost."),
    (Outcome(True, True, code=4000, reason="odd"), "the connection to ssh ended with code 4000 (odd)."),
])
def test_explanations(outcome, message):
    assert explain(outcome, "ssh", "localhost:3000").startswith(message)


def test_a_normal_close_needs_no_explanation():
    assert explain(Outcome(True, True, code=1000), "ssh", "localhost:3000") is None


# The relay, against a fake WebSocket server.


class Client:
    """A ConnectRun on a memory reactor: local connections and WebSocket servers by hand."""

    def __init__(self, clock, stdio=False, authorization="TPoT-1 test", listen="127.0.0.1:2222"):
        self.clock = clock
        self.clock.running = True
        self.out, self.err = io.StringIO(), io.StringIO()
        self.settings = settings(secret=SECRET, listen=None if stdio else listen, stdio=stdio)
        self.stdio_transport = None
        self.run = ConnectRun(
            self.settings, clock, self.out, self.err,
            authorize=lambda key: defer.succeed(authorization), stdio=self._stdio,
        )
        self.run.start()

    def _stdio(self, protocol, reactor):
        self.stdio_transport = connect(protocol, MemoryTransport(self.clock))

    def local(self):
        """A new local connection to the listening port."""
        factory = self.clock.tcpServers[-1][1]
        return connect(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000)), MemoryTransport(self.clock))

    def websocket(self, index=-1):
        """The TCP connection of the index-th WebSocket, made."""
        host, port, factory, _, _ = self.clock.tcpClients[index]
        assert (host, port) == ("localhost", 3000)
        return connect(factory.buildProtocol(IPv4Address("TCP", host, port)), MemoryTransport(self.clock))

    def request(self, websocket):
        head = websocket.value().split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        return head[0], dict(line.split(": ", 1) for line in head[1:])

    def upgrade(self, websocket):
        _, headers = self.request(websocket)
        websocket.receive((
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {websocket_accept(headers['Sec-WebSocket-Key'])}\r\n\r\n"
        ).encode("latin-1"))
        websocket.frames = FrameReader()
        websocket.seen = len(websocket.value())

    def refuse(self, websocket, status=401):
        websocket.receive(f"HTTP/1.1 {status} No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        settle(self.clock)

    def frames(self, websocket):
        new, websocket.seen = websocket.value()[websocket.seen:], len(websocket.value())
        return websocket.frames.feed(new)

    def send(self, websocket, payload, opcode=BINARY):
        websocket.receive(encode_frame(opcode, payload, mask=False))

    def close(self, websocket, code, reason=b""):
        self.send(websocket, close_payload(code, reason), CLOSE)
        settle(self.clock)

    def linked(self):
        """A local connection with its WebSocket open."""
        local = self.local()
        websocket = self.websocket()
        self.upgrade(websocket)
        return local, websocket


@pytest.fixture
def clock(server):
    return server.clock


def test_listening_is_announced(clock):
    client = Client(clock)
    assert clock.tcpServers[0][0] == 2222 and clock.tcpServers[0][3] == "127.0.0.1"
    assert client.out.getvalue() == "tpot listening on 127.0.0.1:2222\n"


def test_each_local_connection_opens_its_own_proved_websocket(clock):
    client = Client(clock)
    first, second = client.local(), client.local()
    assert len(clock.tcpClients) == 2
    line, headers = client.request(client.websocket(0))
    assert line == "GET /connect-tpot?subdomain=ssh HTTP/1.1"
    assert headers["Authorization"] == "TPoT-1 test"
    assert first.producerState == second.producerState == "paused"  # until the WebSocket is open


def test_the_local_connection_is_read_once_the_websocket_is_open(clock):
    client = Client(clock)
    local = client.local()
    local.receive(b"early")
    websocket = client.websocket()
    client.upgrade(websocket)
    settle(clock)
    assert [(f.opcode, f.masked, f.payload) for f in client.frames(websocket)] == [(BINARY, True, b"early")]


def test_bytes_go_both_ways(clock):
    client = Client(clock)
    local, websocket = client.linked()
    local.receive(b"SSH-2.0-client\r\n")
    assert [f.payload for f in client.frames(websocket)] == [b"SSH-2.0-client\r\n"]
    client.send(websocket, b"SSH-2.0-server\r\n")
    client.send(websocket, bytes(range(256)) * 400)
    assert local.value() == b"SSH-2.0-server\r\n" + bytes(range(256)) * 400


def test_a_full_local_buffer_stops_reading_the_websocket(clock):
    client = Client(clock)
    local, websocket = client.linked()
    local.hold()
    client.send(websocket, b"x" * 70_000)
    assert websocket.producerState == "paused"
    local.drain()
    assert websocket.producerState == "producing"


def test_a_full_websocket_buffer_stops_reading_the_local_connection(clock):
    client = Client(clock)
    local, websocket = client.linked()
    websocket.hold()
    local.receive(b"y" * 70_000)
    assert local.producerState == "paused"
    websocket.drain()
    assert local.producerState == "producing"


def test_a_local_side_gone_while_full_no_longer_stops_the_websocket(clock):
    client = Client(clock)
    local, websocket = client.linked()
    local.hold()
    client.send(websocket, b"x" * 70_000)
    assert websocket.producerState == "paused"
    local.abortConnection()
    settle(clock)
    assert websocket.producerState == "producing"
    assert client.frames(websocket)[-1].close_code == 1000


def test_the_local_side_closing_closes_the_websocket_with_1000(clock):
    client = Client(clock)
    local, websocket = client.linked()
    local.peer_closes()
    frames = client.frames(websocket)
    assert frames[-1].opcode == CLOSE and frames[-1].close_code == 1000
    client.close(websocket, 1000)
    websocket.peer_closes()
    settle(clock)
    assert client.run.links == {} and client.err.getvalue() == ""


def test_the_websocket_closing_closes_the_local_side_after_what_came(clock):
    client = Client(clock)
    local, websocket = client.linked()
    local.hold()
    client.send(websocket, b"z" * 70_000)
    client.close(websocket, 1000)  # not read yet: the local side is full
    assert not local.lost and client.frames(websocket) == []
    local.drain()
    settle(clock)
    assert client.frames(websocket)[-1].close_code == 1000
    websocket.peer_closes()
    settle(clock)
    assert local.lost and local.value() == b"z" * 70_000
    assert client.err.getvalue() == ""


@pytest.mark.parametrize("status, sentence", [
    (401, "tpot: the server refused the connection to ssh: 401, check --secret or -k.\n"),
    (404, "tpot: the server refused the connection to ssh: 404, it is not a TCP tunnel (or the server has no tpot connect).\n"),
    (503, "tpot: the server refused the connection to ssh: 503, the tunnel is not connected (or the server is busy).\n"),
])
def test_a_refusal_closes_that_connection_and_says_why_once(clock, status, sentence):
    client = Client(clock)
    local = client.local()
    client.refuse(client.websocket(), status)
    assert local.lost and local.value() == b""
    assert client.err.getvalue() == sentence
    # The listener carries on.
    client.linked()
    assert client.run.exit_code == 0 and not clock.hasStopped


@pytest.mark.parametrize("code, sentence", [
    (4502, "tpot: the tunnel's client could not reach its target.\n"),
    (4503, "tpot: the tunnel ssh closed the connection (4503: The tunnel closed.)\n"),
])
def test_closes_that_are_failures_are_explained(clock, code, sentence):
    client = Client(clock)
    local, websocket = client.linked()
    client.close(websocket, code, b"The tunnel closed.")
    websocket.peer_closes()
    settle(clock)
    assert local.lost and client.err.getvalue() == sentence


def test_an_unreachable_server_closes_the_local_connection(clock):
    client = Client(clock)
    local = client.local()
    factory = clock.tcpClients[-1][2]
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    settle(clock)
    assert local.lost and client.err.getvalue() == "tpot: the server localhost:3000 could not be reached.\n"


def test_a_local_side_that_leaves_before_the_websocket_opens(clock):
    client = Client(clock)
    local = client.local()
    websocket = client.websocket()
    local.peer_closes()
    settle(clock)
    assert websocket.lost  # dropped while shaking hands
    assert client.err.getvalue() == ""


def test_stdio_is_one_connection_and_the_whole_run(clock):
    client = Client(clock, stdio=True)
    local = client.stdio_transport
    websocket = client.websocket()
    client.upgrade(websocket)
    local.receive(b"ping")
    assert [f.payload for f in client.frames(websocket)] == [b"ping"]
    client.send(websocket, b"pong")
    client.close(websocket, 1000)
    websocket.peer_closes()
    settle(clock)
    assert local.value() == b"pong" and local.lost
    assert clock.hasStopped and client.run.exit_code == 0
    assert client.out.getvalue() == "" and client.err.getvalue() == ""


def test_stdio_exits_1_on_a_refusal(clock):
    client = Client(clock, stdio=True)
    client.refuse(client.websocket(), 401)
    assert client.stdio_transport.lost and clock.hasStopped
    assert client.run.exit_code == 1
    assert client.err.getvalue() == "tpot: the server refused the connection to ssh: 401, check --secret or -k.\n"


def test_stopping_closes_every_websocket_cleanly(clock):
    client = Client(clock)
    (_, websocket), (_, second) = client.linked(), client.linked()
    done = client.run.stop()
    for ws in (websocket, second):
        assert client.frames(ws)[-1].close_code == 1000
    client.close(websocket, 1000)
    websocket.peer_closes()
    settle(clock)
    assert not done.called
    client.close(second, 1000)
    second.peer_closes()
    settle(clock)
    assert done.called and client.run.exit_code == 0 and client.err.getvalue() == ""


def test_stopping_waits_only_so_long(clock):
    client = Client(clock)
    client.linked()
    done = client.run.stop()
    clock.advance(CLOSE_WAIT)
    assert done.called


def test_stopping_with_nothing_open_is_immediate(clock):
    assert Client(clock).run.stop() is None


# The whole way, in memory: local connection, client, server, TCP tunnel.


class Wire:
    """Carries bytes both ways between the client's WebSocket transport and a server one."""

    def __init__(self, clock, client, server):
        self.clock = clock
        self.ends = [(client, server), (server, client)]
        self.sent = {client: 0, server: 0}

    def pump(self):
        for _ in range(100):
            moved = False
            for source, sink in self.ends:
                written = source.value()[self.sent[source]:]
                self.sent[source] += len(written)
                if written and not sink.lost:
                    sink.receive(written)
                    moved = True
                if source.lost and not sink.lost:
                    sink.peer_closes()
                    moved = True
            settle(self.clock)
            if not moved:
                return
        raise AssertionError("the wire never went quiet")


def through(server, secret=SECRET):
    """A client whose local connection's WebSocket is wired to `server`: (client, local, wire)."""
    header = auth.make_authorization(secret, timestamp_ms=server.authenticator.clock_ms())
    client = Client(server.clock, authorization=header)
    local = client.local()
    wire = Wire(server.clock, client.websocket(), server.connect(peer=("127.0.0.1", 40001)))
    wire.pump()
    return client, local, wire


def tcp_tunnel(server):
    return server.open_tunnel("ssh", headers=[("TPoT-Extensions", "tcp"), ("TPoT-Access-Secret", SECRET)])


def test_a_session_through_the_server(server):
    tunnel = tcp_tunnel(server)
    client, local, wire = through(server)
    assert tunnel.new_messages() == [b"\x11R\x01\x00\x7f\x00\x00\x01\x41\x9c"]
    local.receive(b"SSH-2.0-client\r\n")
    wire.pump()
    assert tunnel.new_messages() == [data(1, b"SSH-2.0-client\r\n")]
    tunnel.send(data(1, b"SSH-2.0-server\r\n"))
    tunnel.send(signal(1, b"X"))
    wire.pump()
    assert local.value() == b"SSH-2.0-server\r\n" and local.lost
    assert client.err.getvalue() == "" and server.table.active_conversations() == 0


def test_closing_locally_reaches_the_tunnel(server):
    tunnel = tcp_tunnel(server)
    client, local, wire = through(server)
    tunnel.new_messages()
    local.peer_closes()
    wire.pump()
    assert tunnel.new_messages() == [signal(1, b"X")]
    assert client.run.links == {}


def test_a_wrong_secret_is_told_and_the_tunnel_never_hears_of_it(server):
    tunnel = tcp_tunnel(server)
    client, local, wire = through(server, secret="w" * 40)
    assert local.lost and tunnel.new_messages() == []
    assert client.err.getvalue() == "tpot: the server refused the connection to ssh: 401, check --secret or -k.\n"


def test_no_connect_through_the_server(server):
    tunnel = tcp_tunnel(server)
    client, local, wire = through(server)
    tunnel.send(signal(1, b"N"))
    wire.pump()
    assert local.lost and client.err.getvalue() == "tpot: the tunnel's client could not reach its target.\n"


def test_a_text_frame_from_a_peer_is_relayed_as_it_is(clock):
    # The server never sends text; were one to come, its bytes are the stream's.
    client = Client(clock)
    local, websocket = client.linked()
    client.send(websocket, b"text", TEXT)
    assert local.value() == b"text"


# Half-closes: the end of a local stream does not end the answer.


def test_the_local_end_of_stream_is_an_empty_message_and_the_answer_still_comes(clock):
    client = Client(clock)
    local, websocket = client.linked()
    local.receive(b"query")
    local.peer_half_closes()
    assert [(f.opcode, f.payload) for f in client.frames(websocket)] == [(BINARY, b"query"), (BINARY, b"")]
    client.send(websocket, b"answer")
    assert local.value() == b"answer" and not local.write_closed and not local.disconnecting
    client.send(websocket, b"")  # the service's end of stream: our FIN, after the answer
    assert local.write_closed and not local.disconnecting


def test_the_secret_is_proved_with_an_hmac_at_once(clock):
    run = ConnectRun(settings(secret=SECRET), clock, io.StringIO(), io.StringIO())
    header = run.authorize(SECRET).result
    credentials = auth.parse_authorization(header, (auth.SECRET_SCHEME,))
    auth.verify_secret(SECRET, "ssh", credentials)
