"""Whether the target answers (tpot.client.health): the down / back state, the words for why
a connection failed, and the warnings written once per change, never per request."""

import io

import pytest
from twisted.internet import error

from tpot.client.health import Change, TargetHealth, TargetWarnings, failure_reason, warning_text
from tpot.client.settings import client_settings


def test_a_target_that_answers_from_the_start_is_never_mentioned():
    health = TargetHealth()
    assert [health.connected(), health.connected()] == [None, None]
    assert health.answering is True


def test_failing_is_said_once_then_answering_again_once():
    health = TargetHealth()
    assert health.connected() is None
    assert [health.failed() for _ in range(5)] == [Change.WENT_DOWN, None, None, None, None]
    assert [health.connected(), health.connected()] == [Change.CAME_BACK, None]
    assert health.failed() is Change.WENT_DOWN


def test_the_check_at_start_up_says_nothing_is_listening_yet():
    health = TargetHealth()
    assert health.failed(at_start=True) is Change.NOT_LISTENING
    assert health.failed() is None  # the visitors that follow: down already
    assert health.connected() is Change.CAME_BACK


def test_a_check_that_fails_after_a_visitor_failed_says_nothing_more():
    health = TargetHealth()
    assert health.failed() is Change.WENT_DOWN
    assert health.failed(at_start=True) is None


def test_a_check_that_fails_after_the_target_answered_is_a_change():
    health = TargetHealth()
    health.connected()
    assert health.failed(at_start=True) is Change.WENT_DOWN


@pytest.mark.parametrize("exception, words", [
    (error.ConnectionRefusedError(), "connection refused"),
    (error.DNSLookupError("x.invalid"), "name does not resolve"),
    (error.TimeoutError(), "timed out"),
    (error.TCPTimedOutError(), "timed out"),
    (error.NoRouteError(), "no route to the host"),
    (ValueError("odd"), "could not connect"),
])
def test_failure_reasons_are_a_few_words(exception, words):
    assert failure_reason(exception) == words


@pytest.mark.parametrize("change, reason, tcp, line", [
    (Change.NOT_LISTENING, "connection refused", False,
     "tpot: nothing is listening on localhost:8000 yet; visitors will get 502 until it is."),
    (Change.NOT_LISTENING, "connection refused", True,
     "tpot: nothing is listening on localhost:8000 yet; connections through the tunnel will fail until it is."),
    (Change.NOT_LISTENING, "name does not resolve", False,
     "tpot: the target localhost:8000 is not answering (name does not resolve); visitors get 502 until it is."),
    (Change.WENT_DOWN, "connection refused", False,
     "tpot: the target localhost:8000 is not answering (connection refused); visitors get 502 until it is."),
    (Change.WENT_DOWN, "timed out", True,
     "tpot: the target localhost:8000 is not answering (timed out); connections through the tunnel fail until it is."),
    (Change.CAME_BACK, None, False, "tpot: the target localhost:8000 answers again."),
])
def test_warning_lines(change, reason, tcp, line):
    assert warning_text(change, "localhost:8000", reason, tcp) == line


def warnings(target="8000", **options):
    err = io.StringIO()
    settings = client_settings(target, server="http://localhost:3000", env={}, config={}, **options)
    return TargetWarnings.for_settings(settings, err), err


def test_warnings_are_written_once_per_change():
    told, err = warnings()
    told.failed("connection refused", at_start=True)
    for _ in range(3):
        told.failed("connection refused")
    told.connected()
    told.connected()
    told.failed("timed out")
    told.failed("connection refused")
    assert err.getvalue().splitlines() == [
        "tpot: nothing is listening on localhost:8000 yet; visitors will get 502 until it is.",
        "tpot: the target localhost:8000 answers again.",
        "tpot: the target localhost:8000 is not answering (timed out); visitors get 502 until it is.",
    ]


def test_a_tls_failure_says_its_own_sentence_once():
    told, err = warnings("https://localhost:8443")
    told.connected()
    told.failed("TLS handshake failed", text="tpot: TLS to the target failed.")
    told.failed("TLS handshake failed", text="tpot: TLS to the target failed.")
    assert err.getvalue() == "tpot: TLS to the target failed.\n"


def test_tcp_tunnels_and_ipv6_targets_are_named_as_connected_to():
    told, err = warnings("[::1]:5432", kind="tcp", access_secret="s" * 32)
    told.failed("connection refused", at_start=True)
    assert err.getvalue() == (
        "tpot: nothing is listening on [::1]:5432 yet; connections through the tunnel will fail until it is.\n")
