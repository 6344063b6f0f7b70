"""End-to-end: the server serving TLS itself (`--listen ssl:...`, no nginx) with
certificates from a private CA made here, the real client trusting that CA through
SSL_CERT_FILE, and visitors over TLS checking the certificate against the CA and their
host name; 1 MiB each way through a tunnel checked by sha256.  A client that does not trust
the CA stops with one sentence.  All on 127.0.0.1, every wait bounded.

A wildcard directly under a top-level name (`*.localhost`) names nothing for OpenSSL (so
Python's ssl and curl) or service_identity (so Twisted, and our client, which logs a
traceback for it): a wildcard certificate needs a domain of two labels or more.  The client
must resolve the domain, which only `localhost` does here, so the tunnel test names its
tunnel in the certificate, and the wildcard test (`*.tpot.localhost`) has visitors only."""

import hashlib
import http.client
import socket
import ssl

import pytest

from tests.support.certs import PrivateCA

from .conftest import DOMAIN, HOST, IO_TIMEOUT, exchange, expected_bytes, pick_free_port, run_tpot, start_connected

pytestmark = pytest.mark.timeout(90)

MIB = 1 << 20


def tls_files(directory, names):
    """(CA certificate, server certificate, server key) paths in `directory`: one
    certificate for DNS `names`, issued by a CA of this test's own."""
    ca = PrivateCA()
    cert, key = ca.issue(names)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    for path, pem in zip(paths, (ca.pem, cert, key)):
        path.write_bytes(pem)
    return paths


@pytest.fixture
def tls_server(server_factory, tmp_path_factory):
    """A factory: tls_server(domain, names) -> a started server for `domain` on an ssl:
    listener with a certificate for `names`, and `ca` its CA certificate's path."""

    def start(domain, names):
        ca, cert, key = tls_files(tmp_path_factory.mktemp("pki"), names)
        port = pick_free_port()
        # After Server's own --domain DOMAIN: the last one counts.
        server = server_factory("--domain", domain, "--listen",
                                f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}", port=port)
        server.ca = ca
        return server

    return start


def url(server):
    return f"https://{DOMAIN}:{server.port}"


def visit_over_tls(server, host, method, path, body=None):
    """(status, body) of one request for `host` over TLS, trusting only the server's CA,
    its certificate checked for `host`."""
    context = ssl.create_default_context(cafile=str(server.ca))
    raw = socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT)
    connection = http.client.HTTPConnection(HOST, server.port, timeout=IO_TIMEOUT)
    # The host need not resolve here: connect to 127.0.0.1 and name it in the handshake.
    try:
        connection.sock = context.wrap_socket(raw, server_hostname=host)
    except ssl.SSLError:
        raw.close()
        raise
    return exchange(connection, method, path, f"{host}:{server.port}", body)


def test_a_tunnel_through_a_server_serving_tls_itself(tls_server, target, tmp_path, monkeypatch):
    tls_server = tls_server(DOMAIN, [DOMAIN, f"tlsdemo.{DOMAIN}"])
    assert (f"serving {DOMAIN} on port {tls_server.port} on {HOST} (IPv4, TLS), auth off;"
            f" connect with: tpot http PORT -t {url(tls_server)}") in tls_server.log()
    # The client verifies the server against OpenSSL's default paths, which SSL_CERT_FILE
    # names (clean_env passes it on).
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca))
    client = start_connected(["http", target.address, "-t", url(tls_server), "-s", "tlsdemo"], tmp_path,
                             server=tls_server)
    try:
        assert client.url == f"https://tlsdemo.{DOMAIN}:{tls_server.port}"
        host = f"tlsdemo.{DOMAIN}"
        status, body = visit_over_tls(tls_server, host, "GET", f"/bytes/{MIB}?seed=11")
        assert (status, hashlib.sha256(body).hexdigest()) == (200, hashlib.sha256(expected_bytes(MIB, 11)).hexdigest())
        upload = expected_bytes(MIB, 12)
        assert visit_over_tls(tls_server, host, "POST", "/sha256", upload) == (
            200, f"{hashlib.sha256(upload).hexdigest()} {MIB}".encode())
    finally:
        client.stop()
    assert "Traceback" not in tls_server.log() + client.stderr()


def test_a_client_refuses_a_server_certificate_it_does_not_trust(tls_server, target, tmp_path):
    server = tls_server(DOMAIN, [DOMAIN])
    result = run_tpot(["http", target.address, "-t", url(server), "-s", "untrusted"], tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0] == (f"tpot: The server {DOMAIN}:{server.port}'s certificate is not trusted (certificate verify failed);"
                        " for a private CA set SSL_CERT_FILE to its PEM file."), lines[0]


def test_a_wildcard_one_level_down_passes_the_standard_hostname_check(tls_server):
    domain = f"tpot.{DOMAIN}"
    server = tls_server(domain, [domain, f"*.{domain}"])
    assert visit_over_tls(server, domain, "GET", "/healthz") == (200, b"ok\n")
    status, _ = visit_over_tls(server, f"demo.{domain}", "GET", "/")
    assert status == 503  # a tunnel's name, verified; no client holds it
