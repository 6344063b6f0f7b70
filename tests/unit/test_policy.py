"""Visitor protection: --basic-auth and --allow-ip, judged on the request stream before
anything reaches the target (VisitorPolicy, and a Conversation wired to it, without sockets)."""

import base64
import random

import pytest

from tests.support.conversations import Harness
from tpot.client.cli import parse_command_line
from tpot.client.policy import FORBIDDEN, UNAUTHORIZED, VisitorPolicy, parse_allowed, refusal_response
from tpot.client.settings import ClientError, client_settings

CREDENTIALS = "alice:pa:ss wörd"


def basic(credentials=CREDENTIALS):
    return b"Basic " + base64.b64encode(credentials.encode("utf-8"))


def head(line=b"GET / HTTP/1.1", *headers):
    return [line, b"Host: demo.localhost", *headers]


def request(path=b"/", *headers, method=b"GET", body=b""):
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: demo.localhost", *headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def authorized(path=b"/", *headers, **kwargs):
    return request(path, b"Authorization: " + basic(), *headers, **kwargs)


def response(body=b"ok"):
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


UNAUTHORIZED_RESPONSE = refusal_response(UNAUTHORIZED)
FORBIDDEN_RESPONSE = refusal_response(FORBIDDEN)


# ---------------------------------------------------------------------------------------
# the policy itself


def test_the_right_credentials_are_admitted_and_stripped():
    policy = VisitorPolicy(CREDENTIALS)
    status, lines = policy.judge(head(b"GET / HTTP/1.1", b"authorization:  " + basic(), b"Accept: */*"), True)
    assert status is None
    assert lines == [b"GET / HTTP/1.1", b"Host: demo.localhost", b"Accept: */*"]
    # The scheme is case-insensitive.
    assert policy.judge(head(b"GET / HTTP/1.1", b"Authorization: bAsIc " + basic()[6:]), True)[0] is None


@pytest.mark.parametrize("headers", [
    (),
    (b"Authorization: " + basic("alice:wrong"),),
    (b"Authorization: " + basic("alice:pa:ss wörd "),),
    (b"Authorization: " + basic("bob:pa:ss wörd"),),
    (b"Authorization: Bearer " + basic()[6:],),
    (b"Authorization: Basic !!not-base64!!",),
    (b"Authorization: Basic",),
    (b"Authorization: " + basic(), b"Authorization: " + basic()),
    (b"Authorization: " + basic("alice:wrong"), b"Authorization: " + basic()),
    (b"X-Authorization: " + basic(),),
])
def test_anything_else_is_refused_with_401(headers):
    assert VisitorPolicy(CREDENTIALS).judge(head(b"GET / HTTP/1.1", *headers), True) == (UNAUTHORIZED, None)


def test_without_credentials_required_heads_pass_unchanged():
    policy = VisitorPolicy(None, parse_allowed(["127.0.0.0/8"]))
    lines = head(b"GET / HTTP/1.1", b"Authorization: Bearer target-token")
    assert policy.judge(lines, True) == (None, lines)
    assert not policy.judges(True) and policy.judges(False)


@pytest.mark.parametrize("address, allowed", [
    ("127.0.0.1", True), ("127.255.0.9", True), ("10.1.2.3", True), ("192.168.1.1", False),
    ("0.0.0.0", False), ("::ffff:127.0.0.1", True), ("", False), ("not an address", False),
    ("2001:db8::7", True), ("2001:DB8:0::7", True), ("2001:db9::7", False), ("::1", False),
])
def test_allowed_ranges(address, allowed):
    policy = VisitorPolicy(None, parse_allowed(["127.0.0.0/8", "10.0.0.0/8", "2001:db8::/32"]))
    assert policy.allows_address(address) is allowed


def test_no_ranges_allow_everyone_and_a_denied_address_is_403_whatever_it_sends():
    assert VisitorPolicy(CREDENTIALS).allows_address("203.0.113.9")
    policy = VisitorPolicy(CREDENTIALS, parse_allowed(["10.0.0.0/8"]))
    assert policy.judge(head(b"GET / HTTP/1.1", b"Authorization: " + basic()), False) == (FORBIDDEN, None)
    assert policy.judge(None, False) == (FORBIDDEN, None)


def test_the_refusals():
    status_line, rest = UNAUTHORIZED_RESPONSE.split(b"\r\n", 1)
    assert status_line == b"HTTP/1.1 401 Unauthorized"
    head_part, body = rest.split(b"\r\n\r\n", 1)
    assert b'WWW-Authenticate: Basic realm="tpot"' in head_part.split(b"\r\n")
    assert b"Connection: close" in head_part.split(b"\r\n")
    assert b"Content-Length: %d" % len(body) in head_part.split(b"\r\n") and body
    assert FORBIDDEN_RESPONSE.startswith(b"HTTP/1.1 403 Forbidden\r\n") and b"WWW-Authenticate" not in FORBIDDEN_RESPONSE
    head_only = refusal_response(UNAUTHORIZED, head_only=True)
    assert head_only == UNAUTHORIZED_RESPONSE[: len(head_only)] and head_only.endswith(b"\r\n\r\n")


# ---------------------------------------------------------------------------------------
# settings


def settings(**options):
    return client_settings("8080", server="http://localhost:3000", env=options.pop("env", {}), config={}, **options)


def test_settings_from_the_command_line():
    s = parse_command_line(["http", "8080", "-t", "http://localhost:3000", "--basic-auth", "u:p:q",
                            "--allow-ip", "127.0.0.0/8", "--allow-ip", "10.0.0.1", "--quiet"])
    assert s.basic_auth == "u:p:q" and s.quiet
    assert [str(n) for n in s.allow_ip] == ["127.0.0.0/8", "10.0.0.1/32"]
    s = settings()
    assert (s.basic_auth, s.allow_ip, s.quiet) == (None, (), False)
    assert settings(env={"TPOT_BASIC_AUTH": "a:b"}).basic_auth == "a:b"
    assert settings(basic_auth="c:d", env={"TPOT_BASIC_AUTH": "a:b"}).basic_auth == "c:d"


@pytest.mark.parametrize("options, words", [
    ({"basic_auth": "alice"}, "--basic-auth needs USER:PASS"),
    ({"basic_auth": ":secret"}, "--basic-auth needs USER:PASS"),
    ({"basic_auth": "alice:"}, "--basic-auth needs USER:PASS"),
    ({"allow_ip": ["127.0.0.0/8", "nonsense"]}, "--allow-ip 'nonsense' is not an address or CIDR range"),
])
def test_invalid_settings_say_what_to_fix(options, words):
    with pytest.raises(ClientError, match=words):
        settings(**options)


# ---------------------------------------------------------------------------------------
# a Conversation: the visitor's stream judged before the target hears of it


def test_a_request_without_credentials_is_answered_401_without_contacting_the_target():
    h = Harness(basic_auth=CREDENTIALS)
    h.visit(request(b"/secret"))
    assert not h.contacted
    assert h.session.visitor_bytes() == UNAUTHORIZED_RESPONSE
    assert h.session.ended == [True]  # closed (the server is told)
    body = UNAUTHORIZED_RESPONSE.split(b"\r\n\r\n", 1)[1]
    assert h.lines() == [f"GET /secret → 401  {len(body)} B  0 ms"]


def test_a_head_request_gets_a_401_without_a_body():
    h = Harness(basic_auth=CREDENTIALS, quiet=True)
    h.visit(request(b"/", method=b"HEAD"))
    assert h.session.visitor_bytes() == refusal_response(UNAUTHORIZED, head_only=True)


def test_an_authorized_request_reaches_the_target_without_its_authorization():
    h = Harness(basic_auth=CREDENTIALS, quiet=True)
    h.visit(authorized(b"/secret", b"Accept: */*", method=b"POST", body=b"data"))
    assert h.contacted
    h.target_up()
    assert h.target_bytes() == request(b"/secret", b"Accept: */*", method=b"POST", body=b"data")
    h.answer(response())
    assert h.session.visitor_bytes() == response() and h.session.ended == []


def test_every_request_of_a_keep_alive_conversation_is_checked():
    h = Harness(basic_auth=CREDENTIALS)
    h.visit(authorized(b"/one"))
    h.target_up()
    h.answer(response(b"first"))
    h.visit(authorized(b"/two"))
    h.answer(response(b"second"))
    h.visit(request(b"/three") + authorized(b"/four"))
    assert h.target_bytes() == request(b"/one") + request(b"/two")
    assert h.session.visitor_bytes() == response(b"first") + response(b"second") + UNAUTHORIZED_RESPONSE
    assert h.session.ended == [True] and h.target.disconnecting
    assert [line.split("  ")[0] for line in h.lines()] == ["GET /one → 200", "GET /two → 200", "GET /three → 401"]


def pipelined_case():
    visitor = authorized(b"/a", method=b"POST", body=b"x" * 40) + authorized(b"/b") + request(b"/c") + authorized(b"/d")
    answers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + response(b"bee")
    return visitor, answers


def test_a_refusal_waits_for_the_answers_to_earlier_pipelined_requests_at_every_split():
    visitor, answers = pipelined_case()
    forwarded = request(b"/a", method=b"POST", body=b"x" * 40) + request(b"/b")
    rng = random.Random(5)
    cuts = [[c] for c in range(len(visitor) + 1)] + [rng.sample(range(len(visitor)), 6) for _ in range(20)]
    for cut in cuts:
        bounds = [0, *sorted(cut), len(visitor)]
        h = Harness(basic_auth=CREDENTIALS, quiet=True)
        h.visit(*[visitor[a:b] for a, b in zip(bounds, bounds[1:])])
        h.target_up()
        assert h.target_bytes() == forwarded, cut
        assert h.session.visitor_bytes() == b""
        h.answer(answers[:-1])
        assert h.session.visitor_bytes() == answers[:-1] and h.session.ended == []
        h.answer(answers[-1:])  # the last earlier response is complete: now the 401
        assert h.session.visitor_bytes() == answers + UNAUTHORIZED_RESPONSE
        assert h.session.ended == [True] and h.target.disconnecting


def test_no_refusal_follows_a_response_that_ends_with_the_connection():
    h = Harness(basic_auth=CREDENTIALS, quiet=True)
    h.visit(authorized(b"/a") + request(b"/b"))
    h.target_up()
    h.answer(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
    h.target_closes()
    assert h.session.visitor_bytes() == b"HTTP/1.0 200 OK\r\n\r\nuntil close"
    assert h.session.ended == [True]


def test_input_that_is_not_http_never_reaches_the_target_when_credentials_are_required():
    h = Harness(basic_auth=CREDENTIALS, quiet=True)
    h.visit(b"\x16\x03\x01\x02\x00 TLS hello")
    assert not h.contacted
    assert h.session.visitor_bytes().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert h.session.ended == [True]


def test_a_visitor_outside_the_allowed_ranges_gets_403_and_the_target_nothing():
    for data in (authorized(b"/"), b"\x16\x03\x01 not http\r\n\r\n"):
        h = Harness(allow_ip=["127.0.0.0/8"], address="10.9.8.7", quiet=True)
        h.visit(data, authorized(b"/again"))
        assert not h.contacted
        assert h.session.visitor_bytes() == FORBIDDEN_RESPONSE
        assert h.session.ended == [True]


def test_nothing_is_forwarded_while_a_denied_visitors_head_is_unfinished():
    h = Harness(allow_ip=["127.0.0.0/8"], address="10.9.8.7")
    h.visit(b"GET /x HTTP/1.1\r\nHost: x")
    assert h.session.visitor_bytes() == b"" and not h.contacted
    h.visit(b"\r\n\r\n")
    assert h.session.visitor_bytes() == FORBIDDEN_RESPONSE and not h.contacted
    assert [line.split("  ")[0] for line in h.lines()] == ["GET /x → 403"]


def test_a_visitor_inside_the_allowed_ranges_is_relayed_as_usual():
    h = Harness(allow_ip=["127.0.0.0/8"], address="127.0.0.1", quiet=True)
    assert h.contacted  # nothing to judge: the target is contacted at once, as without the option
    h.visit(b"\x16\x03\x01 anything at all")
    h.target_up()
    assert h.target_bytes() == b"\x16\x03\x01 anything at all"


def test_allowed_address_and_credentials_together():
    h = Harness(allow_ip=["127.0.0.0/8"], basic_auth=CREDENTIALS, address="127.0.0.1", quiet=True)
    h.visit(request(b"/"))
    assert h.session.visitor_bytes() == UNAUTHORIZED_RESPONSE and not h.contacted
    h = Harness(allow_ip=["127.0.0.0/8"], basic_auth=CREDENTIALS, address="127.0.0.1", quiet=True)
    h.visit(authorized(b"/"))
    assert h.contacted


def test_an_authorized_upgrade_passes_the_rest_through():
    h = Harness(basic_auth=CREDENTIALS, quiet=True)
    upgrade = authorized(b"/ws", b"Connection: Upgrade", b"Upgrade: websocket")
    h.visit(upgrade + b"\x81\x05hello")
    h.target_up()
    assert h.target_bytes() == request(b"/ws", b"Connection: Upgrade", b"Upgrade: websocket") + b"\x81\x05hello"
