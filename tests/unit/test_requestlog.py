"""The live request log: request heads (HostRewriter's on_head) matched to the target's
responses (ResponseTracker) at any split, and the lines a Conversation prints."""

import io

import pytest
from twisted.internet import error

from tests.support.conversations import Harness
from tests.support.splits import every_split
from tpot.client.requestlog import (
    MAX_PENDING,
    NO_RESPONSE,
    Entry,
    RequestLogger,
    ResponseTracker,
    format_duration,
    format_entry,
    format_size,
    plain_response,
    request_line,
)
from tpot.http.framing import MAX_LINE_SIZE, MAX_RELAYED_HEAD_SIZE
from tpot.http.rewrite import HostRewriter


def chunk(data, extension=b""):
    return b"%x%s\r\n%s\r\n" % (len(data), extension, data)


# Requests and the target's answers, in order: (request, response, expected entry).
GET = (b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
       b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 6\r\n\r\nhello\n",
       ("GET", "/index.html", 200, 6))
CHUNKED = (b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           + chunk(b"HTTP/1.1 200 OK\r\n\r\n") + b"0\r\nX-Sum: 1\r\n\r\n",
           b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
           + chunk(b"abc", b";ext=1") + chunk(b"HTTP/1.1 500 X\r\n\r\n") + b"0\r\nX-Trailer: yes\r\n\r\n",
           ("POST", "/upload", 201, len(b"abc" + b"HTTP/1.1 500 X\r\n\r\n")))
HEAD = (b"HEAD /big HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 123456\r\n\r\n",
        ("HEAD", "/big", 200, 0))
NO_CONTENT = (b"DELETE /thing HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
              b"HTTP/1.1 204 No Content\r\n\r\n",
              ("DELETE", "/thing", 204, 0))
NOT_MODIFIED = (b"GET /cached HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\n\r\n",
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\nETag: \"x\"\r\n\r\n",
                ("GET", "/cached", 304, 0))
CONTINUE = (b"PUT /form?a=1 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ("PUT", "/form?a=1", 200, 2))
MISSING = (b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n",
           b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found",
           ("GET", "/missing", 404, 9))
UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"
           b"\x81\x05hello GET /no HTTP/1.1\r\n\r\n",
           b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
           b"\x81\x02hi HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
           ("GET", "/ws", 101, None))

# Heads the fast path (a plain Content-Length) must leave to the general parser, or read as it does.
SPACED = (b"GET /spaced HTTP/1.1\r\nHost: a\r\n\r\n",
          b"HTTP/1.1 200 OK\r\nContent-Length :\t3 \r\nX: y\r\n\r\nabc",
          ("GET", "/spaced", 200, 3))
NAMED_ELSEWHERE = (b"GET /cors HTTP/1.1\r\nHost: a\r\n\r\n",
                   b"HTTP/1.1 200 OK\r\nAccess-Control-Expose-Headers: Content-Length\r\n"
                   b"X-Content-Length: 99\r\nCONTENT-LENGTH: 4\r\n\r\nabcd",
                   ("GET", "/cors", 200, 4))
CODED_TOO = (b"GET /both HTTP/1.1\r\nHost: a\r\n\r\n",
             b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
             + chunk(b"xyz") + b"0\r\n\r\n",
             ("GET", "/both", 200, 3))
EMPTY = (b"GET /empty HTTP/1.1\r\nHost: a\r\n\r\n",
         b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
         ("GET", "/empty", 200, 0))
TIGHT = (b"GET /bare HTTP/1.1\r\nHost: a\r\n\r\n",
                   b"HTTP/1.0 302 Found\r\nContent-Length:2\r\n\r\n:)",
                   ("GET", "/bare", 302, 2))

# The same head again (the shortcut remembers the last), also answering a HEAD request.
SAME_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"
AGAIN = (b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n", SAME_HEAD + b"hello\n", ("GET", "/again", 200, 6))
HEAD_AGAIN = (b"HEAD /again HTTP/1.1\r\nHost: a\r\n\r\n", SAME_HEAD, ("HEAD", "/again", 200, 0))

KEEP_ALIVE = [GET, CHUNKED, HEAD, NO_CONTENT, NOT_MODIFIED, CONTINUE, MISSING]
STREAMS = {
    "keep-alive": KEEP_ALIVE,
    "then-upgrade": [GET, HEAD, CONTINUE, UPGRADE],
    "bodiless-first": [HEAD, NOT_MODIFIED, NO_CONTENT, CHUNKED, MISSING],
    "unusual-lengths": [SPACED, NAMED_ELSEWHERE, EMPTY, CODED_TOO, TIGHT, GET, GET],
    "repeated-heads": [AGAIN, AGAIN, HEAD_AGAIN, AGAIN, MISSING, AGAIN],
}


class Pair:
    """The request side (a HostRewriter reporting heads) and the response side, unwired from I/O."""

    def __init__(self):
        self.tracker = ResponseTracker()
        self.rewriter = HostRewriter(None, None, self.on_head)
        self.forwarded = []
        self.entries = []
        self.now = 0.0

    def on_head(self, lines):
        if lines is None:
            return True
        self.tracker.request(*request_line(lines), self.now)
        return lines

    def requests(self, *pieces):
        for piece in pieces:
            self.forwarded.append(self.rewriter.feed(piece))

    def responses(self, *pieces):
        for piece in pieces:
            self.entries += self.tracker.feed(piece, self.now)

    def close(self):
        self.entries += self.tracker.close(self.now)

    def seen(self):
        return [(e.method, e.path, e.status, e.size) for e in self.entries]


@pytest.mark.parametrize("name", STREAMS)
def test_pipelined_responses_are_matched_in_order_at_every_split(name):
    exchanges = STREAMS[name]
    requests = b"".join(request for request, _, _ in exchanges)
    responses = b"".join(response for _, response, _ in exchanges)
    expected = [entry for _, _, entry in exchanges]
    for pieces in every_split(responses):
        pair = Pair()
        pair.requests(requests)
        pair.responses(*pieces)
        assert pair.seen() == expected, [len(p) for p in pieces]
        assert b"".join(pair.forwarded) == requests  # the log changes nothing it sees


@pytest.mark.parametrize("name", STREAMS)
def test_request_heads_are_reported_once_each_at_every_split(name):
    exchanges = STREAMS[name]
    requests = b"".join(request for request, _, _ in exchanges)
    responses = b"".join(response for _, response, _ in exchanges)
    for pieces in every_split(requests, random_splits=10):
        pair = Pair()
        pair.requests(*pieces)
        assert b"".join(pair.forwarded) == requests
        pair.responses(responses)
        assert pair.seen() == [entry for _, _, entry in exchanges]


# Response heads and the body length the shortcut reads in them; None: the general parser's call.
HEADS = {
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n": 6,
    b"HTTP/1.0 404 Not Found\r\nServer: nginx\r\ncontent-length:0\r\nETag: \"x\"\r\n\r\n": 0,
    b"HTTP/1.1 500\r\nCONTENT-LENGTH: \t 1048577  \r\nX: y\r\n\r\n": 1048577,
    b"HTTP/1.1 200 OK\r\n\r\n": None,  # no headers: the body runs until the connection closes
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\n\r\n": None,
    b"HTTP/1.1 100 Continue\r\nContent-Length: 6\r\n\r\n": None,
    b"HTTP/1.1 204 No Content\r\nContent-Length: 6\r\n\r\n": None,
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\n": None,
    b"HTTP/1.1 200 OK\r\nContent-Length : 6\r\n\r\n": None,  # the general parser strips the name
    b"HTTP/1.1 200 OK\r\n Content-Length: 6\r\n\r\n": None,
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Length: 6\r\n\r\n": None,
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\ntransfer-encoding : chunked\r\n\r\n": None,
    b"HTTP/1.1 200 OK\r\nX-Content-Length: 6\r\n\r\n": None,
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n": None,
    b"HTTP/1.1 200 OK\r\nContent-Length: 6, 6\r\n\r\n": None,
    b"HTTP/1.1 200 OK\r\nContent-Length: \x0b6\r\n\r\n": 6,  # what bytes.strip strips
    b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n": None,
    b"HTTP/1.1 200 OK\r\nX: a\nContent-Length: 6\r\n\r\n": None,  # a bare LF: not a line of its own
    b"HTTP/1.1 200 OK\rContent-Length: 6\r\n\r\n": None,
    b"http/1.1 200 OK\r\nContent-Length: 6\r\n\r\n": None,
    b"HTTP/1.1 200 " + b"x" * MAX_LINE_SIZE + b"\r\nContent-Length: 6\r\n\r\n": None,
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX: " + b"y" * MAX_RELAYED_HEAD_SIZE + b"\r\n\r\n": None,
}


@pytest.mark.parametrize("head", HEADS, ids=range(len(HEADS)))
def test_a_plain_content_length_is_read_at_once_and_anything_else_left_to_the_general_parser(head):
    length = HEADS[head]
    status = int(head[9:12]) if head[9:12].isdigit() else None
    assert plain_response(head + b"body") == (None if length is None else (status, len(head), length))


@pytest.mark.parametrize("head", [head for head, length in HEADS.items() if length is not None])
def test_the_shortcut_reads_what_the_general_parser_reads(head):
    body = b"x" * HEADS[head]
    byte_by_byte, at_once = Pair(), Pair()  # a head split across reads goes to the general parser
    for pair in (byte_by_byte, at_once):
        pair.requests(GET[0], MISSING[0])
    byte_by_byte.responses(*(head[i:i + 1] for i in range(len(head))), body, MISSING[1])
    at_once.responses(head + body + MISSING[1])
    assert at_once.seen() == byte_by_byte.seen() == [("GET", "/index.html", int(head[9:12]), HEADS[head]), MISSING[2]]


def test_without_entries_a_tracker_still_follows_the_responses():
    tracker = ResponseTracker(entries=False)
    tracker.request("GET", "/index.html", 0.0)
    assert not tracker.feed(GET[1][:20], 0.5) and not tracker.answered
    assert not tracker.feed(GET[1][20:], 1.0) and tracker.answered


def test_keep_alive_requests_answered_one_by_one():
    pair = Pair()
    for request, response, entry in KEEP_ALIVE:
        pair.requests(request)
        assert pair.tracker.answered is False
        pair.responses(response)
        assert pair.seen()[-1] == entry
        assert pair.tracker.answered
    assert len(pair.entries) == len(KEEP_ALIVE)


def test_an_interim_response_does_not_answer_the_request():
    pair = Pair()
    pair.requests(CONTINUE[0])
    pair.responses(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert pair.entries == [] and not pair.tracker.answered
    pair.responses(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert pair.seen() == [("PUT", "/form?a=1", 200, 0)]


def test_durations_run_from_the_request_head_to_the_end_of_the_response():
    pair = Pair()
    pair.now = 10.0
    pair.requests(GET[0])
    pair.now = 10.002
    pair.requests(MISSING[0])
    pair.now = 10.25
    pair.responses(GET[1][:-1])
    assert pair.entries == []
    pair.now = 10.5
    pair.responses(GET[1][-1:] + MISSING[1])
    assert [round(e.duration, 3) for e in pair.entries] == [0.5, 0.498]


def test_a_body_read_until_close_ends_with_the_connection():
    pair = Pair()
    pair.requests(GET[0], MISSING[0])
    pair.responses(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nsome", b" data HTTP/1.1 404 X\r\n\r\n")
    assert pair.entries == []
    pair.close()
    # The pipelined request behind it got nothing: its visitor's connection closed.
    assert pair.seen() == [("GET", "/index.html", 200, 4 + 24), ("GET", "/missing", None, None)]
    assert pair.entries[1].why == NO_RESPONSE
    assert pair.tracker.lost and not pair.tracker.answered


def test_a_transfer_coding_other_than_chunked_is_read_until_close():
    pair = Pair()
    pair.requests(GET[0])
    pair.responses(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8bzz")
    pair.close()
    assert pair.seen() == [("GET", "/index.html", 200, 4)]


@pytest.mark.parametrize("length", [b"", b"Content-Length: 5\r\n"])
def test_connect_tunnel_is_the_last_entry(length):
    pair = Pair()
    pair.requests(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01")
    pair.responses(b"HTTP/1.1 200 Connection established\r\n" + length + b"\r\n\x16\x03\x03HTTP/1.1 200 OK\r\n\r\n")
    assert pair.seen() == [("CONNECT", "example.com:443", 200, None)]
    assert pair.tracker.lost


def test_a_declined_upgrade_is_logged_and_then_the_log_stops():
    pair = Pair()
    pair.requests(UPGRADE[0])  # the request side passes the rest through: no more heads
    pair.responses(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 3\r\n\r\nno!",
                   b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert pair.seen() == [("GET", "/ws", 426, 3)]
    assert pair.tracker.lost


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/2 200\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"y" * MAX_RELAYED_HEAD_SIZE + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX: " + b"y" * MAX_RELAYED_HEAD_SIZE + b"\r\n\r\nx",
    b"HTTP/1.1 200 " + b"y" * MAX_LINE_SIZE + b"\r\nContent-Length: 1\r\n\r\nx",
])
def test_what_cannot_be_framed_ends_the_log_at_every_split(response):
    stream = response + MISSING[1]
    for pieces in every_split(stream, random_splits=5) if len(stream) < 1000 else [[stream]]:
        pair = Pair()
        pair.requests(GET[0], MISSING[0])
        pair.responses(*pieces)
        assert pair.entries == [] and pair.tracker.lost


def test_a_response_nobody_asked_for_ends_the_log():
    pair = Pair()
    pair.responses(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
    pair.requests(GET[0])
    pair.responses(GET[1])
    assert pair.entries == [] and pair.tracker.lost


def test_when_the_request_side_gives_up_earlier_requests_are_still_logged():
    pair = Pair()
    pair.requests(GET[0] + b"\x16\x03\x01 not http\r\n\r\n")
    pair.responses(GET[1] + b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    assert pair.seen() == [GET[2]]
    assert pair.tracker.lost


def test_a_pipeline_too_long_to_remember_is_not_logged():
    pair = Pair()
    pair.requests(GET[0] * MAX_PENDING)
    assert len(pair.tracker.pending) == MAX_PENDING and not pair.tracker.lost
    pair.requests(GET[0])
    assert pair.tracker.lost and not pair.tracker.pending
    pair.responses(GET[1] * (MAX_PENDING + 1))
    assert pair.entries == []


# ---------------------------------------------------------------------------------------
# lines


def test_line_format():
    assert format_entry(Entry("GET", "/index.html", 200, 6, 0.0031)) == "GET /index.html → 200  6 B  3 ms"
    assert format_entry(Entry("GET", "/ws", 101, None, 0.002)) == "GET /ws → 101  2 ms"
    assert format_entry(Entry("POST", "/x", 502, 0, 0), arrow="->") == "POST /x -> 502  0 B  0 ms"


def test_a_request_the_target_did_not_answer_says_what_the_visitor_got_instead():
    unreachable = Entry("GET", "/x", 502, None, 0.004, "target unreachable (connection refused)")
    assert format_entry(unreachable) == "GET /x → 502 target unreachable (connection refused)  4 ms"
    assert format_entry(unreachable, colour=True, arrow="->") == (
        "GET /x -> \x1b[31m502\x1b[0m target unreachable (connection refused)  4 ms")
    closed = Entry("POST", "/y", None, None, 1.5, NO_RESPONSE)
    assert format_entry(closed, colour=True) == "POST /y → no response (the connection closed)  1500 ms"


@pytest.mark.parametrize("size, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                        (5 * 1024 * 1024, "5.0 MiB"), (3 << 30, "3.0 GiB")])
def test_sizes(size, text):
    assert format_size(size) == text


@pytest.mark.parametrize("seconds, text", [(0, "0 ms"), (0.0004, "0 ms"), (0.0126, "13 ms"), (9.9994, "9999 ms"),
                                           (12.34, "12.3 s")])
def test_durations(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("status, code", [(101, "35"), (200, "32"), (302, "36"), (404, "33"), (503, "31")])
def test_status_classes_have_colours(status, code):
    line = format_entry(Entry("GET", "/", status, 0, 0), colour=True)
    assert f"\x1b[{code}m{status}\x1b[0m" in line


def test_a_visitor_cannot_send_escape_sequences_to_the_terminal():
    line = format_entry(Entry("GET", "/\x1b]0;owned\x07\x1b[2J\xff", 200, 0, 0))
    assert line.startswith("GET /%1B]0;owned%07%1B[2J%FF → 200")
    assert "\x1b" not in line
    long = format_entry(Entry("GET", "/" + "a" * 500, 200, 0, 0))
    assert len(long) < 260 and "..." in long


class Terminal(io.StringIO):
    def isatty(self):
        return True


class AsciiPipe(io.StringIO):
    encoding = "ascii"


class ClosedPipe:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass


def test_colour_on_a_terminal_plain_when_piped():
    entry = Entry("GET", "/", 200, 6, 0.003)
    terminal, piped = Terminal(), io.StringIO()
    RequestLogger(terminal).write(entry)
    RequestLogger(piped).write(entry)
    assert terminal.getvalue() == "GET / → \x1b[32m200\x1b[0m  6 B  3 ms\n"
    assert piped.getvalue() == "GET / → 200  6 B  3 ms\n"


def test_an_output_that_cannot_take_the_arrow_gets_ascii():
    out = AsciiPipe()
    RequestLogger(out).write(Entry("GET", "/", 200, 6, 0.003))
    assert out.getvalue() == "GET / -> 200  6 B  3 ms\n"


def test_a_closed_stdout_ends_the_log_not_the_tunnel():
    logger = RequestLogger(ClosedPipe())
    logger.write(Entry("GET", "/", 200, 6, 0.003))
    logger.write(Entry("GET", "/", 200, 6, 0.003))
    assert logger.broken


# ---------------------------------------------------------------------------------------
# a Conversation: what goes to the target, what comes back, timed by the reactor's clock


def test_a_conversation_logs_each_keep_alive_request_with_its_timing():
    h = Harness()
    h.visit(GET[0])
    h.target_up()
    h.answer(GET[1][:20], GET[1][20:], step=0.0015)
    h.visit(MISSING[0][:10], MISSING[0][10:])
    h.answer(MISSING[1], step=0.012)
    assert h.lines() == ["GET /index.html → 200  6 B  3 ms", "GET /missing → 404  9 B  12 ms"]
    assert h.target_bytes() == GET[0] + MISSING[0]
    assert h.session.visitor_bytes() == GET[1] + MISSING[1]


def test_a_conversation_logs_pipelined_requests_and_the_upgrade_line():
    h = Harness()
    h.visit(GET[0] + HEAD[0] + UPGRADE[0])
    h.target_up()
    h.answer(GET[1] + HEAD[1] + UPGRADE[1], b"more websocket bytes HTTP/1.1 200 OK\r\n\r\n")
    assert h.lines() == ["GET /index.html → 200  6 B  0 ms", "HEAD /big → 200  0 B  0 ms", "GET /ws → 101  0 ms"]


def test_a_conversation_logs_a_response_read_until_close_when_the_target_closes():
    h = Harness()
    h.visit(b"GET /old HTTP/1.0\r\n\r\n")
    h.target_up()
    h.answer(b"HTTP/1.0 200 OK\r\n\r\n12345", step=0.001)
    assert h.lines() == []
    h.target_closes()
    assert h.lines() == ["GET /old → 200  5 B  1 ms"]
    assert h.session.ended == [True]


def test_quiet_conversations_have_no_tracker_at_all():
    h = Harness(quiet=True)
    assert h.conversation.responses is None and h.conversation.rewriter is None
    h.visit(GET[0])
    h.target_up()
    h.answer(GET[1])
    assert h.out.getvalue() == "" and h.target_bytes() == GET[0]
    # With Host rewriting the rewriter is there, but it reports nothing.
    h = Harness(quiet=True, host_rewrite="localhost:8080")
    assert h.conversation.responses is None and h.conversation.rewriter.on_head is None


def test_the_log_follows_what_actually_goes_to_the_target():
    h = Harness(host_rewrite="localhost:8080")
    h.visit(GET[0])
    h.target_up()
    assert h.target_bytes() == GET[0].replace(b"Host: a", b"Host: localhost:8080")
    h.answer(GET[1])
    assert h.lines() == ["GET /index.html → 200  6 B  0 ms"]


# A conversation whose target is not there, or goes before answering: what the visitor got.


@pytest.mark.parametrize("exception, why", [
    (error.ConnectionRefusedError(), "connection refused"),
    (error.DNSLookupError("x.invalid"), "name does not resolve"),
    (error.TimeoutError(), "timed out"),
])
def test_a_conversation_that_could_not_connect_logs_its_request_as_502_with_the_reason(exception, why):
    h = Harness()
    h.visit(GET[0])
    h.clock.advance(0.02)
    h.target_unreachable(exception)
    assert h.lines() == [f"GET /index.html → 502 target unreachable ({why})  20 ms"]
    assert h.session.signals == ["N"] and h.session.ended == [False]


def test_pipelined_requests_behind_a_502_get_nothing_and_say_so():
    h = Harness()
    h.visit(GET[0] + MISSING[0])
    h.target_unreachable(error.ConnectionRefusedError())
    assert h.lines() == ["GET /index.html → 502 target unreachable (connection refused)  0 ms",
                         "GET /missing → no response (the connection closed)  0 ms"]


def test_a_conversation_that_could_not_connect_before_a_whole_request_logs_nothing():
    h = Harness()
    h.visit(GET[0][:10])
    h.target_unreachable(error.ConnectionRefusedError())
    assert h.lines() == [] and h.session.signals == ["N"]


def test_quiet_conversations_log_no_502():
    h = Harness(quiet=True)
    h.visit(GET[0])
    h.target_unreachable(error.ConnectionRefusedError())
    assert h.out.getvalue() == "" and h.session.signals == ["N"]


def test_a_target_that_closes_before_answering_logs_no_response():
    h = Harness()
    h.visit(GET[0])
    h.target_up()
    h.clock.advance(0.005)
    h.target_closes()
    assert h.lines() == ["GET /index.html → no response (the connection closed)  5 ms"]
    assert h.session.ended == [True] and h.session.visitor_bytes() == b""


def test_a_target_that_closes_mid_response_logs_nothing_more():
    h = Harness()
    h.visit(GET[0] + MISSING[0])
    h.target_up()
    h.answer(GET[1][:30])
    h.target_closes()
    assert h.lines() == []
