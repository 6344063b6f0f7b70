"""Who may use the inspector (tpot.client.inspector.guard): its Host check against DNS
rebinding and its token check against cross-site requests."""

import pytest

from tpot.client.inspector.guard import host_allowed, token_matches


@pytest.mark.parametrize("host", ["127.0.0.1:4040", "localhost:4040", "LOCALHOST:4040", " localhost:4040 "])
def test_its_own_address_and_localhost_are_allowed(host):
    assert host_allowed(host, "127.0.0.1", 4040)


@pytest.mark.parametrize("host", [
    "evil.example:4040",  # a rebound name resolving to 127.0.0.1
    "127.0.0.1.nip.io:4040",
    "localhost.evil:4040",
    "127.0.0.1:4041",  # another port
    "localhost",  # port 80
    "127.0.0.2:4040",  # another loopback address than the one listened on
    "[::1]:4040",
    "",
    None,
    "127.0.0.1:40x0",
    "[::1",
    "127.0.0.1:4040:1",
])
def test_any_other_host_is_refused(host):
    assert not host_allowed(host, "127.0.0.1", 4040)


def test_ipv6_loopback_and_a_wildcard_address():
    assert host_allowed("[::1]:4040", "::1", 4040)
    assert host_allowed("192.0.2.7:4040", "0.0.0.0", 4040)
    assert not host_allowed("inspector.lan:4040", "0.0.0.0", 4040)
    assert host_allowed("127.0.0.5:4040", "localhost", 4040)


def test_the_token_must_match_exactly():
    assert token_matches("abc123", "abc123")
    assert not token_matches("abc12", "abc123")
    assert not token_matches(None, "abc123")
    assert not token_matches("", "abc123")
    assert not token_matches("abc123\u00e9", "abc123")
