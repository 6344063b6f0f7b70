"""The server's start-up line (tpot.server.startup): listeners in words, and the client command."""

import pytest

from tpot.server.startup import IPV4, IPV6, PLAIN, PROXIED, TLS, UNIX, Listener, kind_of, startup_line

BOTH = frozenset({IPV4, IPV6})


def tcp(host, port, *families, kind=PLAIN):
    return Listener(kind, host, port, frozenset(families))


@pytest.mark.parametrize(
    "description, kind",
    [
        ("tcp:3000", PLAIN),
        (r"tcp6:3000:interface=\:\:", PLAIN),
        ("ssl:3443:privateKey=key.pem", TLS),
        ("SSL:3443", TLS),
        ("haproxy:tcp:3000", PROXIED),
        ("unix:/run/tpot.sock", UNIX),
        ("systemd:domain=INET:index=0", PLAIN),
    ],
)
def test_kind_of_an_endpoint(description, kind):
    assert kind_of(description) == kind


def test_the_default_dual_stack_socket():
    line = startup_line("1.2", "localhost", [tcp("::", 3000, IPV4, IPV6)], auth_key=None)
    assert line == (
        "tpot 1.2 serving localhost on port 3000 (IPv4 and IPv6), auth off;"
        " connect with: tpot http PORT -t http://localhost:3000"
    )


def test_an_ipv6_only_socket_and_an_ipv4_one_on_one_port_are_one_port():
    line = startup_line("1.2", "localhost", [tcp("::", 3000, IPV6), tcp("0.0.0.0", 3000, IPV4)], None)
    assert "on port 3000 (IPv4 and IPv6), auth off;" in line


def test_an_interface_is_named_and_listeners_are_joined():
    line = startup_line("1.2", "localhost", [tcp("127.0.0.1", 3000, IPV4), tcp("::1", 3000, IPV6)], None)
    assert "on port 3000 on 127.0.0.1 (IPv4) and port 3000 on ::1 (IPv6), auth off;" in line


def test_auth_on_adds_the_key_to_the_hint_but_never_the_key():
    line = startup_line("1.2", "localhost", [tcp("::", 3000, *BOTH)], "s3cret-key-0123456789abcdefghijklmnop")
    assert line.endswith("auth on; connect with: tpot http PORT -t http://localhost:3000 -k KEY")
    assert "s3cret" not in line


def test_tls_on_another_domain():
    listeners = [tcp("0.0.0.0", 443, IPV4, kind=TLS), tcp("127.0.0.1", 3000, IPV4)]
    line = startup_line("1.2", "tpot.example.com", listeners, None)
    assert "on port 443 (IPv4, TLS) and port 3000 on 127.0.0.1 (IPv4)" in line
    assert line.endswith("connect with: tpot http PORT -t https://tpot.example.com")


def test_the_hint_skips_listeners_a_client_cannot_reach_directly():
    listeners = [tcp("127.0.0.1", 3000, IPV4, kind=PROXIED), Listener(UNIX, "/run/t.sock"), tcp("::", 80, *BOTH)]
    line = startup_line("1.2", "example.com", listeners, None)
    assert "port 3000 on 127.0.0.1 (IPv4, PROXY protocol) and UNIX socket /run/t.sock and port 80" in line
    assert line.endswith("connect with: tpot http PORT -t http://example.com")


def test_no_hint_behind_a_proxy_only():
    line = startup_line("1.2", "example.com", [tcp("127.0.0.1", 3000, IPV4, kind=PROXIED)], None)
    assert line.endswith("(IPv4, PROXY protocol), auth off")


def test_workers_and_cluster_come_before_the_hint():
    line = startup_line("1.2", "localhost", [tcp("::", 3000, *BOTH)], None, workers=", worker 1 of 2",
                        cluster=", node n-w1 of the cluster in redis://r:6379/0")
    assert "auth off, worker 1 of 2, node n-w1 of the cluster in redis://r:6379/0; connect with:" in line


def test_no_endpoint_syntax():
    line = startup_line("1.2", "localhost", [tcp("::", 3000, *BOTH)], None)
    assert "tcp6:" not in line and "interface=" not in line and "\\" not in line
