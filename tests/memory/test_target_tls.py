"""HTTPS targets: settings (https://, --insecure, --ca), the TLS endpoints the connector
chooses, and real TLS handshakes with a target over memory transports."""

import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols import tls
from twisted.protocols.tls import TLSMemoryBIOFactory

from tests.memory.test_session import Client, data, opened, signal
from tests.support.certs import self_signed
from tests.support.memory import BINARY, MemoryTransport, connect, settle, use_clock
from tpot.client import cli
from tpot.client.cli import parse_command_line
from tpot.client.files import read_ca_file
from tpot.client.settings import Address, ClientError, client_settings
from tpot.client.target import TargetConnector
from tpot.client.tls import HANDSHAKE_TIMEOUT, InsecureClientTLS, target_tls

SERVER = "http://localhost:3000"


def assert_one_sentence(message):
    assert message.endswith(".") and "\n" not in message, message
    assert re.search(r"[.!?]\s+[A-Z]", message[:-1]) is None, message


def settings(target, **options):
    options.setdefault("config", {})
    return client_settings(target, server=SERVER, env={}, **options)


@pytest.fixture(scope="module")
def localhost_cert(tmp_path_factory):
    """A self-signed certificate for the name localhost only (no IP address in it)."""
    cert, key = self_signed("localhost", ("localhost",), ())
    path = tmp_path_factory.mktemp("certs") / "localhost.pem"
    path.write_bytes(cert)
    return cert, key, str(path)


@pytest.fixture(scope="module")
def other_cert(tmp_path_factory):
    cert, key = self_signed("other.example", ("other.example",), ())
    path = tmp_path_factory.mktemp("certs") / "other.pem"
    path.write_bytes(cert)
    return cert, key, str(path)


# Settings.


@pytest.mark.parametrize(
    "target, address, rewrite",
    [
        ("https://localhost", Address("https", "localhost", 443, "localhost"), "localhost"),
        ("https://localhost:8443", Address("https", "localhost", 8443, "localhost:8443"), "localhost:8443"),
        ("HTTPS://app.example:8443/", Address("https", "app.example", 8443, "app.example:8443"), "app.example:8443"),
        ("https://[::1]:8443", Address("https", "::1", 8443, "[::1]:8443"), "[::1]:8443"),
    ],
)
def test_https_targets_are_parsed(target, address, rewrite):
    result = settings(target)
    assert result.target == address
    assert result.host_rewrite == rewrite
    assert (result.target_insecure, result.target_ca) == (False, None)


def test_insecure_option():
    result = parse_command_line(["http", "https://localhost:8443", "-t", SERVER, "--insecure"])
    assert result.target_insecure and result.target_ca is None


def test_ca_option_reads_the_file(localhost_cert, other_cert, tmp_path):
    result = parse_command_line(["http", "https://localhost:8443", "-t", SERVER, "--ca", localhost_cert[2]])
    assert result.target_ca == localhost_cert[0] and not result.target_insecure
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"a comment\n" + localhost_cert[0] + other_cert[0])
    assert read_ca_file(str(bundle)) == bundle.read_bytes()
    assert settings("https://localhost", ca=bundle.read_bytes()).target_ca == bundle.read_bytes()


def test_insecure_and_ca_are_command_line_only(tmp_path):
    result = settings("https://localhost", config={"insecure": True, "ca": str(tmp_path / "missing.pem")})
    assert (result.target_insecure, result.target_ca) == (False, None)


def bad_ca_files(tmp_path, key):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    key_only = tmp_path / "key.pem"
    key_only.write_bytes(key)
    corrupt = tmp_path / "corrupt.pem"
    corrupt.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    return [tmp_path / "missing.pem", tmp_path, not_pem, key_only, corrupt]


def test_bad_ca_file_is_one_sentence(tmp_path, localhost_cert):
    for path in bad_ca_files(tmp_path, localhost_cert[1]):
        with pytest.raises(ClientError) as error:
            read_ca_file(str(path))
        assert_one_sentence(str(error.value))
        assert str(path) in str(error.value)


def test_bad_ca_file_exits_1_with_one_line(tmp_path, capsys):
    code = cli.main(["http", "https://localhost:8443", "-t", SERVER, "--ca", str(tmp_path / "missing.pem")])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.startswith("tpot: The CA file ") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "target, options",
    [("http://localhost:8080", {"insecure": True}), ("8080", {"ca": b"PEM"}), ("https://localhost", {"insecure": True, "ca": b"PEM"})],
)
def test_tls_options_that_do_not_apply_are_refused(target, options):
    with pytest.raises(ClientError) as error:
        settings(target, **options)
    assert_one_sentence(str(error.value))


# The TLS connection creators and endpoints.


def test_tls_creator_per_target(localhost_cert):
    assert target_tls(settings("http://localhost:8080")) is None
    verified = target_tls(settings("https://localhost:8443"))
    assert verified._hostname == "localhost" and verified._sendServerName
    private = target_tls(settings("https://localhost:8443", ca=localhost_cert[0]))
    assert private._hostname == "localhost"
    insecure = target_tls(settings("https://localhost:8443", insecure=True))
    assert isinstance(insecure, InsecureClientTLS) and insecure.server_name == b"localhost"
    # No SNI for an address (RFC 6066); verification against the address.
    assert target_tls(settings("https://127.0.0.1:8443", insecure=True)).server_name is None
    assert not target_tls(settings("https://127.0.0.1:8443"))._sendServerName


@pytest.fixture
def clock(monkeypatch):
    clock = MemoryReactorClock()
    # TLS transports batch small writes until the next reactor turn: on this clock.
    monkeypatch.setattr(tls, "_get_default_clock", lambda: clock)
    restore = use_clock(clock)
    yield clock
    restore()


def tls_factory(factory):
    """The TLSMemoryBIOFactory inside the factory an endpoint handed the reactor, or None."""
    while factory is not None and not isinstance(factory, TLSMemoryBIOFactory):
        factory = getattr(factory, "_wrappedFactory", None)
    return factory


class Recorder(Protocol):
    def connectionMade(self):
        self.made = True


def dial(clock, factory, host, port):
    """Complete a connection attempt on the memory reactor; the transport (what the client wrote)."""
    transport = MemoryTransport(clock, peer=(host, port))
    connect(factory.buildProtocol(IPv4Address("TCP", host, port)), transport)
    settle(clock)
    return transport


def test_connector_wraps_every_endpoint_in_tls_for_the_name(clock):
    connector = TargetConnector.for_settings(clock, settings("https://localhost:8443", insecure=True))
    connector.connect(Factory.forProtocol(Recorder))
    host, port, factory, _, _ = clock.tcpClients[-1]
    assert (host, port) == ("127.0.0.1", 8443) and tls_factory(factory) is not None
    hello = dial(clock, factory, host, port).value()
    assert hello.startswith(b"\x16\x03") and b"localhost" in hello  # a ClientHello naming localhost (SNI)
    assert connector.address == "127.0.0.1"
    # The cached address is dialled directly, still through TLS made for "localhost".
    connector.connect(Factory.forProtocol(Recorder))
    host, port, factory, _, _ = clock.tcpClients[-1]
    assert (host, port) == ("127.0.0.1", 8443) and tls_factory(factory) is not None
    hello = dial(clock, factory, host, port).value()
    assert hello.startswith(b"\x16\x03") and b"localhost" in hello


def test_connector_for_an_http_target_does_not_use_tls(clock):
    connector = TargetConnector.for_settings(clock, settings("http://localhost:8080"))
    connector.connect(Factory.forProtocol(Recorder))
    assert connector.tls is None and tls_factory(clock.tcpClients[-1][2]) is None


# Handshakes with a TLS target over memory transports.


class TLSTarget:
    """The target's end: TLS with `cert`/`key`, recording the SNI name and the bytes received."""

    def __init__(self, clock, cert, key):
        options = CertificateOptions(
            privateKey=serialization.load_pem_private_key(key, None),
            certificate=x509.load_pem_x509_certificate(cert),
        )
        self.server_names = []
        options.getContext().set_tlsext_servername_callback(lambda conn: self.server_names.append(conn.get_servername()))
        self.received = []
        target = self

        class Plain(Protocol):
            def dataReceived(self, data):
                target.received.append(data)

        self.factory = TLSMemoryBIOFactory(options, False, Factory.forProtocol(Plain))
        self.clock = clock

    def accept(self, client_side):
        """Join `client_side` (the client's transport to the target) to a new server end."""
        self.transport = MemoryTransport(self.clock, peer=("127.0.0.1", 50000), host=("127.0.0.1", 8443))
        self.protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        connect(self.protocol, self.transport)
        self.client_side = client_side
        self._sent = {client_side: 0, self.transport: 0}
        self.pump()
        return self

    def pump(self):
        for _ in range(100):
            settle(self.clock)
            moved = False
            for source, sink in ((self.client_side, self.transport), (self.transport, self.client_side)):
                new = source.value()[self._sent[source]:]
                if new and not sink.lost:
                    self._sent[source] += len(new)
                    sink.receive(new)
                    moved = True
            settle(self.clock)
            if not moved:
                return
        raise AssertionError("the handshake does not settle")

    def send(self, data):
        self.protocol.write(data)
        self.pump()


def open_client(clock, target, **options):
    client = Client(clock, target=target, **options)
    client.answer_upgrade()
    client.server_sends(b"\x11GTPoT/1 wire")
    return client


def binary(client):
    """The tunnel messages the client sent since last asked (auto-pings left out)."""
    return [frame.payload for frame in client.frames() if frame.opcode == BINARY]


REQUEST = b"GET / HTTP/1.1\r\nHost: wire.localhost:3000\r\n\r\n"


def test_verified_target_gets_the_request_after_the_handshake(clock, localhost_cert):
    cert, key, path = localhost_cert
    client = open_client(clock, "https://localhost:8443", ca=read_ca_file(path))
    tls_target = TLSTarget(clock, cert, key)
    for conversation_id in (1, 2):  # the second dials the cached address: still verified as localhost
        client.server_sends(opened(conversation_id))
        client.server_sends(data(conversation_id, REQUEST))
        tls_target.accept(client.connect_target())
        assert tls_target.server_names == [b"localhost"] * conversation_id
        assert b"".join(tls_target.received) == b"GET / HTTP/1.1\r\nHost: localhost:8443\r\n\r\n"
        tls_target.received.clear()
        tls_target.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        assert client.messages() == [data(conversation_id, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]
    assert [host for host, *_ in clock.tcpClients] == ["127.0.0.1", "127.0.0.1"]
    assert client.factory.target.address == "127.0.0.1"


@pytest.mark.parametrize("options, why", [({}, "certificate verify failed"), ("other", "does not match the host name")])
def test_untrusted_certificate_is_could_not_connect(clock, localhost_cert, other_cert, capsys, options, why):
    if options == "other":  # trusted, but made out to another name
        served, options = other_cert, {"ca": read_ca_file(other_cert[2])}
    else:  # self-signed: not in the system's roots
        served = localhost_cert
    client = open_client(clock, "https://localhost:8443", **options)
    for conversation_id in (1, 2):
        client.server_sends(opened(conversation_id))
        client.server_sends(data(conversation_id, REQUEST))
        target = client.connect_target()
        tls_target = TLSTarget(clock, served[0], served[1]).accept(target)
        assert tls_target.received == []
        assert client.messages() == [signal(conversation_id, b"N")]
        assert conversation_id not in client.protocol.conversations
        assert target.lost
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and why in err and "--insecure" in err and "Traceback" not in err, err


def test_the_start_up_check_of_an_https_target_is_a_handshake(clock, localhost_cert, capsys):
    client = open_client(clock, "https://localhost:8443")
    client.factory.target.check()
    target = client.connect_target()
    TLSTarget(clock, localhost_cert[0], localhost_cert[1]).accept(target)
    assert target.lost  # closed either way: the check sends nothing
    err = capsys.readouterr().err
    assert err.startswith("tpot: TLS to the target localhost:8443 failed: certificate verify failed"), err
    client.server_sends(opened(1))  # a visitor meets the same certificate: said once already
    TLSTarget(clock, localhost_cert[0], localhost_cert[1]).accept(client.connect_target())
    assert client.messages() == [signal(1, b"N")] and capsys.readouterr().err == ""


def test_the_start_up_check_passes_once_the_handshake_is_done(clock, localhost_cert, capsys):
    client = open_client(clock, "https://localhost:8443", insecure=True)
    client.factory.target.check()
    target = client.connect_target()
    tls_target = TLSTarget(clock, localhost_cert[0], localhost_cert[1]).accept(target)
    assert tls_target.server_names == [b"localhost"] and tls_target.received == []
    assert client.factory.target.warnings.health.answering is True and capsys.readouterr().err == ""


def test_insecure_accepts_a_self_signed_certificate_and_still_sends_sni(clock, other_cert):
    cert, key, _ = other_cert
    client = open_client(clock, "https://localhost:8443", insecure=True)
    client.server_sends(opened(1))
    client.server_sends(data(1, REQUEST))
    tls_target = TLSTarget(clock, cert, key).accept(client.connect_target())
    assert tls_target.server_names == [b"localhost"]
    assert b"".join(tls_target.received).startswith(b"GET / HTTP/1.1\r\nHost: localhost:8443\r\n")


def test_target_that_never_completes_the_handshake_is_could_not_connect(clock, capsys):
    client = open_client(clock, "https://localhost:8443", insecure=True)
    client.server_sends(opened(1))
    target = client.connect_target()
    assert target.value().startswith(b"\x16\x03")  # a ClientHello, unanswered
    clock.advance(HANDSHAKE_TIMEOUT - 1)
    settle(clock)
    assert not target.lost and binary(client) == []
    clock.advance(1)
    settle(clock)
    assert target.lost and binary(client) == [signal(1, b"N")]
    assert "no TLS handshake within" in capsys.readouterr().err


def test_target_speaking_plain_http_is_could_not_connect(clock, capsys):
    client = open_client(clock, "https://localhost:8443", insecure=True, log=True)
    client.server_sends(opened(1))
    client.server_sends(data(1, REQUEST))
    target = client.connect_target()
    target.receive(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    settle(clock)
    assert client.messages() == [signal(1, b"N")]
    assert client.out.getvalue() == "GET / → 502 target unreachable (TLS handshake failed)  0 ms\n"
    err = capsys.readouterr().err
    assert err.startswith("tpot: TLS to the target localhost:8443 failed: ") and "Traceback" not in err, err
