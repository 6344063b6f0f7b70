"""The client's sentences for a tunnel that cannot be opened (tpot.client.explain)."""

import pytest
from OpenSSL import SSL
from twisted.internet import error

from tpot.client.explain import lost_before_open, refusal, unreachable
from tpot.client.settings import client_settings


def settings(server="http://localhost:3000", **options):
    return client_settings("8000", server=server, **options)


def test_401_without_a_key_says_how_to_give_one():
    assert refusal(401, {}, settings()) == "This server requires an auth key (401): pass -k KEY or set TPOT_AUTH_KEY."
    assert "did not accept the auth key" in refusal(401, {}, settings(auth_key="k" * 32))


@pytest.mark.parametrize("server, advice", [
    ("http://127.0.0.1:3000", "use -t http://localhost:3000."),
    ("https://10.0.0.1", "use -t https://localhost."),
])
def test_404_names_the_domain_the_server_serves(server, advice):
    sentence = refusal(404, {"tpot-domain": "localhost"}, settings(server))
    assert "serves localhost and *.localhost" in sentence and sentence.endswith(advice)


def test_404_from_a_server_that_names_no_domain():
    assert refusal(404, {}, settings()) == "The server answered 404 Not Found; check the server URL."


def test_a_hostile_domain_is_shown_escaped():
    assert "\x1b" not in refusal(404, {"tpot-domain": "evil\x1b[2J"}, settings())


def test_409_says_whether_the_name_is_in_use_or_kept_and_for_how_long():
    assert refusal(409, {}, settings(subdomain="demo")) == \
        "The subdomain demo is already in use by another client (409); pick another with -s."
    kept = refusal(409, {"retry-after": "42"}, settings(subdomain="demo"))
    assert kept == "The subdomain demo is held for another client's dropped tunnel for about 42 s more (409); wait, or pick another with -s."
    assert "already in use" in refusal(409, {"retry-after": "soon"}, settings(subdomain="demo"))
    assert "until it times out" in refusal(409, {}, settings(subdomain="demo"), reconnecting=True)


@pytest.mark.parametrize("failure, words", [
    (error.DNSLookupError("x"), "The server notaurl:80 could not be reached (the name notaurl does not resolve)."),
    (error.ConnectionRefusedError(), "(connection refused: nothing listens there)."),
    (error.TimeoutError(), "(no answer)."),
    (ValueError("other"), "The server notaurl:80 could not be reached."),
])
def test_an_unreachable_server_is_named_with_its_port_and_why(failure, words):
    assert unreachable(settings("notaurl").server, failure).endswith(words)


def test_tls_to_a_plain_http_server_suggests_http():
    failure = SSL.Error([("SSL routines", "", "wrong version number")])
    sentence = lost_before_open(settings("https://localhost:3000").server, failure)
    assert sentence == ("The server localhost:3000 did not complete a TLS handshake (wrong version number);"
                        " if it serves plain HTTP, use -t http://localhost:3000.")


def test_an_untrusted_server_certificate_says_how_to_trust_a_private_ca():
    failure = SSL.Error([("SSL routines", "", "certificate verify failed")])
    assert "set SSL_CERT_FILE" in lost_before_open(settings("https://localhost").server, failure)


def test_a_plain_close_before_the_tunnel_opened():
    assert lost_before_open(settings().server, None) == \
        "The server localhost:3000 closed the connection before the tunnel opened."
