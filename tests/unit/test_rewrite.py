"""The client's Host rewriter: every request of a keep-alive stream, at any split, and nothing else."""

import random

import pytest

from tpot.http.rewrite import MAX_LINE_SIZE, MAX_RELAYED_HEAD_SIZE, Forwarded, HostRewriter, forwarded_for

TARGET = b"localhost:8080"
VISITOR = b"demo.tunnel.example"


def request(line, *headers, body=b""):
    """A request template; `{host}` stands for the Host value, rewritten or not."""
    return b"\r\n".join((line, *headers)) + b"\r\n\r\n" + body


def with_length(line, body, *headers):
    return request(line, b"Host: {host}", *headers, b"Content-Length: %d" % len(body), body=body)


def chunk(data, extension=b""):
    return b"%x%s\r\n%s\r\n" % (len(data), extension, data)


def chunked(line, chunks, trailers=(), *headers):
    last = b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n"
    return request(line, b"Host: {host}", *headers, b"Transfer-Encoding: chunked", body=b"".join(chunks) + last)


def fill(templates, host):
    return b"".join(t.replace(b"{host}", host) for t in templates)


def rewrite(chunks, host=TARGET):
    rewriter = HostRewriter(host.decode("latin-1"))
    return b"".join(rewriter.feed(piece) for piece in chunks)


def splits_at(data, cuts):
    cuts = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:])]


def assert_same_for_every_split(data, expected, random_splits=40):
    """One split anywhere, one byte at a time, and random multi-splits all give `expected`."""
    assert rewrite([data]) == expected
    for cut in range(len(data) + 1):
        assert rewrite(splits_at(data, [cut])) == expected, f"split at {cut}"
    assert rewrite([data[i:i + 1] for i in range(len(data))]) == expected
    rng = random.Random(len(data))
    for _ in range(random_splits if len(data) > 2 else 0):
        cuts = rng.sample(range(len(data) + 1), rng.randint(2, min(12, len(data))))
        assert rewrite(splits_at(data, cuts)) == expected, f"splits at {sorted(cuts)}"


GET = request(b"GET / HTTP/1.1", b"Host: {host}", b"Accept: */*")
POST_FORM = with_length(b"POST /form HTTP/1.1", b"Host: body-host\r\n\r\nGET /fake HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"Content-Type: text/plain")
ZERO_LENGTH = with_length(b"PUT /empty HTTP/1.1", b"")
CHUNKED = chunked(
    b"POST /chunks HTTP/1.1",
    [chunk(b"hello", b";name=value"), chunk(b"Host: inner\r\n\r\nGET / HTTP/1.1\r\n\r\n", b" ; a=b; c"),
     chunk(b"\r\n0\r\n\r\n")],
    [b"X-Checksum: abc", b"X-Trailer: yes"],
)
CHUNKED_NO_TRAILERS = chunked(b"PATCH /p HTTP/1.1", [chunk(b"x" * 300)], (), b"Content-Type: a/b")
HOST_LAST = request(b"DELETE /thing HTTP/1.1", b"User-Agent: t", b"Content-Length: 0", b"Host: {host}")
HTTP10 = request(b"GET /old HTTP/1.0", b"Host: {host}")
TE_AND_LENGTH = request(b"POST /both HTTP/1.1", b"Host: {host}", b"Content-Length: 3", b"Transfer-Encoding: chunked",
                        body=chunk(b"abcdef") + b"0\r\n\r\n")
GZIP_CHUNKED = request(b"POST /gz HTTP/1.1", b"Host: {host}", b"Transfer-Encoding: gzip, chunked",
                       body=chunk(b"\x1f\x8b\x08binary") + b"0\r\n\r\n")

PIPELINES = {
    "gets": [GET, GET, GET],
    "mixed": [GET, POST_FORM, ZERO_LENGTH, CHUNKED, GET, HOST_LAST, CHUNKED_NO_TRAILERS, HTTP10],
    "bodies-first": [POST_FORM, CHUNKED, ZERO_LENGTH, TE_AND_LENGTH, GZIP_CHUNKED, GET],
}


@pytest.mark.parametrize("name", PIPELINES)
def test_every_request_of_a_keep_alive_stream_is_rewritten(name):
    templates = PIPELINES[name]
    expected = fill(templates, TARGET)
    assert rewrite([fill(templates, VISITOR)]) == expected
    assert expected.count(b"Host: " + TARGET) == len(templates)


@pytest.mark.parametrize("name", PIPELINES)
def test_output_is_the_same_for_every_split(name):
    templates = PIPELINES[name]
    assert_same_for_every_split(fill(templates, VISITOR), fill(templates, TARGET))


def test_requests_fed_one_at_a_time_are_each_rewritten_at_once():
    rewriter = HostRewriter(TARGET.decode())
    for template in PIPELINES["mixed"]:
        assert rewriter.feed(fill([template], VISITOR)) == fill([template], TARGET)


def test_a_head_is_held_until_complete_and_body_bytes_flow_at_once():
    rewriter = HostRewriter(TARGET.decode())
    assert rewriter.feed(b"POST / HTTP/1.1\r\nHost: a\r\n") == b""
    assert rewriter.feed(b"Content-Length: 10\r\n\r\nhell") == b"POST / HTTP/1.1\r\nHost: localhost:8080\r\nContent-Length: 10\r\n\r\nhell"
    assert rewriter.feed(b"o w") == b"o w"


def test_other_headers_are_untouched():
    template = request(b"GET / HTTP/1.1", b"X-Forwarded-Host: {host}", b"Hostname: {host}", b"X-Host: a",
                       b"Host-Override: b", b"Host: {host}", b"Referer: http://{host}/", b"Cookie: Host: c")
    expected = fill([template], VISITOR).replace(b"Host: " + VISITOR + b"\r\nReferer", b"Host: " + TARGET + b"\r\nReferer")
    assert rewrite([fill([template], VISITOR)]) == expected
    assert expected.count(TARGET) == 1


@pytest.mark.parametrize("line", [b"host: {host}", b"HOST: {host}", b"Host:{host}", b"Host:   {host}  "])
def test_host_header_name_is_case_insensitive(line):
    out = rewrite([request(b"GET / HTTP/1.1", line.replace(b"{host}", VISITOR), b"Accept: x")])
    assert out == b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nAccept: x\r\n\r\n"


def test_every_host_header_of_a_request_is_rewritten():
    out = rewrite([request(b"GET / HTTP/1.1", b"Host: a", b"Host: b")])
    assert out == b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nHost: localhost:8080\r\n\r\n"


def test_a_request_without_host_is_left_unchanged():
    without = request(b"GET / HTTP/1.0", b"User-Agent: old")
    stream = without + fill([GET], VISITOR) + without
    assert_same_for_every_split(stream, without + fill([GET], TARGET) + without, random_splits=10)


@pytest.mark.parametrize("template, lookalike", [(POST_FORM, b"\r\nHost: x\r\n"), (CHUNKED, b"\r\nHost: inner\r\n")],
                         ids=["length", "chunked"])
def test_host_lookalikes_in_bodies_are_not_rewritten(template, lookalike):
    assert lookalike in template
    out = rewrite([fill([template], VISITOR)])
    assert out == fill([template], TARGET)
    assert out.count(b"Host: " + TARGET) == 1
    assert out.count(lookalike) == template.count(lookalike) == 1


def test_custom_http_host():
    assert rewrite([fill([GET], VISITOR)], host=b"internal.example") == fill([GET], b"internal.example")


# Pass-through once the framing cannot be followed.

WEBSOCKET_UPGRADE = request(b"GET /socket HTTP/1.1", b"Host: {host}", b"Connection: keep-alive, Upgrade",
                            b"Upgrade: websocket", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                            b"Sec-WebSocket-Version: 13")
CONNECT = request(b"CONNECT example.com:443 HTTP/1.1", b"Host: {host}")
UNKNOWN_CODING = request(b"POST / HTTP/1.1", b"Host: {host}", b"Transfer-Encoding: gzip")
CHUNKED_NOT_LAST = request(b"POST / HTTP/1.1", b"Host: {host}", b"Transfer-Encoding: chunked, gzip")
BAD_LENGTH = request(b"POST / HTTP/1.1", b"Host: {host}", b"Content-Length: abc")
LIST_LENGTH = request(b"POST / HTTP/1.1", b"Host: {host}", b"Content-Length: 5, 5")
CONFLICTING_LENGTHS = request(b"POST / HTTP/1.1", b"Host: {host}", b"Content-Length: 5", b"Content-Length: 6")
NEGATIVE_LENGTH = request(b"POST / HTTP/1.1", b"Host: {host}", b"Content-Length: -1")

# Bytes after the head that look like HTTP but must never be touched.
AFTERWARDS = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58" + fill([GET, GET], VISITOR) + b"\x88\x00"


@pytest.mark.parametrize(
    "head",
    [UNKNOWN_CODING, CHUNKED_NOT_LAST, BAD_LENGTH, LIST_LENGTH, CONFLICTING_LENGTHS, NEGATIVE_LENGTH,
     request(b"GET / HTTP/1.1", b"Host: {host}", b"Transfer-Encoding:")],
    ids=["gzip", "chunked-not-last", "bad-length", "list-length", "two-lengths", "negative", "empty-coding"],
)
def test_a_request_whose_body_cannot_be_framed_is_refused_and_nothing_of_it_reaches_the_target(head):
    # A lenient target would guess where the body ends, and could read a request in it.
    smuggled = request(b"GET /admin HTTP/1.1", b"Host: internal.example")
    out, refused = refusal_at_every_split(fill([GET, head], VISITOR) + smuggled)
    assert refused == 400
    assert out.count(b"\r\n\r\n") == 1 and out.startswith(b"GET / HTTP/1.1\r\nHost: " + TARGET)
    assert b"POST" not in out and b"/admin" not in out and b"internal.example" not in out


@pytest.mark.parametrize("head", [WEBSOCKET_UPGRADE, CONNECT], ids=["upgrade", "connect"])
def test_head_rewritten_then_everything_passes_through(head):
    stream = fill([GET, head], VISITOR) + AFTERWARDS
    expected = fill([GET, head], TARGET) + AFTERWARDS
    assert_same_for_every_split(stream, expected, random_splits=15)


@pytest.mark.parametrize("head", [WEBSOCKET_UPGRADE, CONNECT], ids=["upgrade", "connect"])
def test_a_request_pipelined_after_an_upgrade_or_connect_is_rewritten(head):
    # A target that refuses the Upgrade (or CONNECT) reads the next request as HTTP.
    smuggled = request(b"GET /admin HTTP/1.1", b"Host: {host}", b"X-Forwarded-For: 10.9.9.9")
    stream = fill([head, smuggled], VISITOR).replace(b"Host: " + VISITOR + b"\r\nX-Forwarded-For",
                                                      b"Host: internal.example\r\nX-Forwarded-For")
    rewriter = HostRewriter(TARGET.decode(), Forwarded("198.51.100.7", "https"))
    out = rewriter.feed(stream)
    assert out.count(b"Host: " + TARGET) == 2 and b"internal.example" not in out
    assert b"X-Forwarded-For: 10.9.9.9, 198.51.100.7" in out and out.count(b"X-Forwarded-Host: " + VISITOR) == 2


def test_a_websocket_after_an_upgrade_with_a_body_passes_through():
    head = request(b"GET /socket HTTP/1.1", b"Host: {host}", b"Connection: Upgrade", b"Upgrade: x",
                   b"Content-Length: 4", body=b"GET ")
    stream = fill([head], VISITOR) + AFTERWARDS
    assert_same_for_every_split(stream, fill([head], TARGET) + AFTERWARDS, random_splits=15)


def test_upgrade_needs_both_connection_and_upgrade_headers():
    only_upgrade = request(b"GET / HTTP/1.1", b"Host: {host}", b"Upgrade: websocket")
    only_connection = request(b"GET / HTTP/1.1", b"Host: {host}", b"Connection: upgrade")
    templates = [only_upgrade, only_connection, GET]
    assert rewrite([fill(templates, VISITOR)]) == fill(templates, TARGET)


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nrest",  # not a chunk size
        b"5\r\nhelloXX\r\n",  # chunk data not followed by CRLF
        b"-1\r\n",
        b"5 5\r\nhello\r\n",
    ],
)
def test_broken_chunked_bodies_pass_through(body):
    head = request(b"POST / HTTP/1.1", b"Host: {host}", b"Transfer-Encoding: chunked")
    stream = fill([head], VISITOR) + body + fill([GET], VISITOR)
    assert_same_for_every_split(stream, fill([head], TARGET) + body + fill([GET], VISITOR), random_splits=10)


@pytest.mark.parametrize(
    "stream",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
        b"SSH-2.0-OpenSSH_9.6\r\n" + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"hello\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"",
    ],
    ids=["tls", "ssh", "text", "leading-crlf", "leading-space", "http2-line", "h2-preface", "empty"],
)
def test_non_http_input_is_untouched(stream):
    assert_same_for_every_split(stream, stream, random_splits=10)


@pytest.mark.parametrize("first", [b"\x16\x03\x01", b"SSH-2.0-x\r\n", b"\x00\x01", b" "])
def test_non_http_input_is_not_held_back(first):
    assert HostRewriter("t").feed(first) == first


def test_garbage_after_a_request_passes_through():
    stream = fill([GET], VISITOR) + b"\x00\x01garbage\r\n\r\n" + fill([GET], VISITOR)
    assert_same_for_every_split(stream, fill([GET], TARGET) + b"\x00\x01garbage\r\n\r\n" + fill([GET], VISITOR),
                                random_splits=10)


# Bounded buffers: the verdict must not depend on how the stream was split.


def test_long_request_line_gets_the_same_verdict_at_any_split():
    template = request(b"GET /" + b"a" * (MAX_LINE_SIZE + 100) + b" HTTP/1.1", b"Host: {host}")
    stream = fill([template, GET], VISITOR)
    whole = rewrite([stream])
    for cut in (10, MAX_LINE_SIZE - 1, MAX_LINE_SIZE, MAX_LINE_SIZE + 1, MAX_LINE_SIZE + 2, MAX_LINE_SIZE + 50):
        assert rewrite(splits_at(stream, [cut])) == whole, cut
    assert whole == stream  # a streaming reader must give up before seeing the end of the line


def test_request_line_within_the_limit_is_rewritten():
    template = request(b"GET /" + b"a" * (MAX_LINE_SIZE - 100) + b" HTTP/1.1", b"Host: {host}")
    stream = fill([template, GET], VISITOR)
    expected = fill([template, GET], TARGET)
    for cut in (0, 100, MAX_LINE_SIZE - 50, len(stream) - 5):
        assert rewrite(splits_at(stream, [cut])) == expected, cut


def test_oversized_head_gets_the_same_verdict_at_any_split():
    template = request(b"GET / HTTP/1.1", b"Host: {host}", b"X-Big: " + b"b" * (MAX_RELAYED_HEAD_SIZE + 100))
    stream = fill([template, GET], VISITOR)
    whole = rewrite([stream])
    for cut in (100, MAX_RELAYED_HEAD_SIZE, MAX_RELAYED_HEAD_SIZE + 1, MAX_RELAYED_HEAD_SIZE + 2, MAX_RELAYED_HEAD_SIZE + 50):
        assert rewrite(splits_at(stream, [cut])) == whole, cut
    assert whole == stream


def test_large_head_within_the_limit_is_rewritten():
    template = request(b"GET / HTTP/1.1", b"Host: {host}", b"X-Big: " + b"b" * (MAX_RELAYED_HEAD_SIZE - 200))
    stream = fill([template, GET], VISITOR)
    for cut in (0, 1000, MAX_RELAYED_HEAD_SIZE - 300, len(stream) - 10):
        assert rewrite(splits_at(stream, [cut])) == fill([template, GET], TARGET), cut


@pytest.mark.parametrize("extension_size", [MAX_LINE_SIZE - 100, MAX_LINE_SIZE + 100])
def test_long_chunk_lines_get_the_same_verdict_at_any_split(extension_size):
    template = chunked(b"POST / HTTP/1.1", [chunk(b"abc", b";" + b"e" * extension_size)])
    stream = fill([template, GET], VISITOR)
    whole = rewrite([stream])
    start = stream.index(b"\r\n\r\n") + 4
    for offset in (1, MAX_LINE_SIZE - 1, MAX_LINE_SIZE, MAX_LINE_SIZE + 1, MAX_LINE_SIZE + 2, MAX_LINE_SIZE + 50):
        assert rewrite(splits_at(stream, [start + offset])) == whole, offset
    if extension_size < MAX_LINE_SIZE:
        assert whole == fill([template, GET], TARGET)


# What a visitor writes cannot override what the tunnel vouches for (issue 11).


def refusal_at_every_split(stream):
    """The rewriter's output and verdict, which must be the same wherever `stream` is split."""
    results = set()
    for cut in range(len(stream) + 1):
        rewriter = HostRewriter(TARGET.decode(), Forwarded("198.51.100.7", "https"))
        out = b"".join(rewriter.feed(piece) for piece in splits_at(stream, [cut]))
        results.add((out, rewriter.refused))
    assert len(results) == 1, results
    return results.pop()


@pytest.mark.parametrize("smuggled", [
    b"GET /x HTTP/1.1\r\nHost: {host}\r\nX-Pad: 1\nX-Forwarded-Host: admin.internal\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: {host}\r\nX-Pad: 1\rX-Forwarded-Proto: http\r\n\r\n",
    b"GET /x HTTP/1.1\nHost: {host}\nX-Forwarded-For: 10.9.9.9\n\n",
    b"GET /x HTTP/1.1\r\nHost: {host}\nX-Forwarded-For: 10.9.9.9\n\n",
    # Folded lines (obs-fold), which the target would join to the header above.
    b"GET /x HTTP/1.1\r\nHost: {host}\r\n admin.internal\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: {host}\r\n\tadmin.internal\r\n\r\n",
    b"GET /x HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\n 10.9.9.9\r\nHost: {host}\r\n\r\n",
])
def test_a_later_head_with_a_bare_cr_or_lf_or_a_folded_line_is_refused_and_nothing_of_it_reaches_the_target(
        smuggled):
    first = fill([GET], VISITOR)
    out, refused = refusal_at_every_split(first + fill([smuggled, GET], VISITOR))
    assert refused == 400
    assert out.count(b"\r\n\r\n") == 1 and out.startswith(b"GET / HTTP/1.1\r\nHost: " + TARGET)
    assert b"admin.internal" not in out and b"10.9.9.9" not in out and b"/x" not in out


def test_bare_lf_inside_a_body_is_not_a_head():
    body = b"line one\nline two\r\n"
    stream = fill([with_length(b"POST /b HTTP/1.1", body), GET], VISITOR)
    out, refused = refusal_at_every_split(stream)
    assert refused is None and body in out and out.count(b"Host: " + TARGET) == 2


@pytest.mark.parametrize("line, origin", [
    (b"GET http://admin.internal/secret?a=1 HTTP/1.1", b"GET /secret?a=1 HTTP/1.1"),
    (b"GET http://admin.internal HTTP/1.1", b"GET / HTTP/1.1"),
    (b"POST https://admin.internal:8443/p HTTP/1.1", b"POST /p HTTP/1.1"),
    (b"GET HTTP://Admin.Internal?q HTTP/1.0", b"GET /?q HTTP/1.0"),
])
def test_absolute_form_targets_reach_the_target_in_origin_form_on_every_request(line, origin):
    absolute, rewritten = request(line, b"Host: {host}"), request(origin, b"Host: {host}")
    assert rewrite([fill([absolute], VISITOR)]) == fill([rewritten], TARGET)
    assert_same_for_every_split(fill([GET, absolute, absolute], VISITOR), fill([GET, rewritten, rewritten], TARGET),
                                random_splits=5)


def test_an_absolute_form_request_without_host_gets_one():
    stream = fill([GET], VISITOR) + b"GET http://admin.internal/x HTTP/1.1\r\nAccept: */*\r\n\r\n"
    assert rewrite([stream]).endswith(b"GET /x HTTP/1.1\r\nHost: " + TARGET + b"\r\nAccept: */*\r\n\r\n")
    without_rewrite = HostRewriter(None).feed(stream)
    assert without_rewrite.endswith(b"GET /x HTTP/1.1\r\nHost: " + VISITOR + b"\r\nAccept: */*\r\n\r\n")


def test_connect_and_asterisk_targets_are_left_alone():
    stream = fill([request(b"OPTIONS * HTTP/1.1", b"Host: {host}")], VISITOR)
    assert rewrite([stream]) == fill([request(b"OPTIONS * HTTP/1.1", b"Host: {host}")], TARGET)
    connect = fill([request(b"CONNECT admin.internal:443 HTTP/1.1", b"Host: {host}")], VISITOR)
    assert rewrite([connect]).startswith(b"CONNECT admin.internal:443 HTTP/1.1\r\n")


def test_x_forwarded_host_is_the_tunnels_public_host_on_every_request():
    other = request(b"GET /two HTTP/1.1", b"Host: other-tunnel.tunnel.example", b"X-Forwarded-Host: evil")
    rewriter = HostRewriter(TARGET.decode(), Forwarded("198.51.100.7", "https"))
    out = rewriter.feed(fill([GET], VISITOR) + other)
    assert out.count(b"X-Forwarded-Host: " + VISITOR + b"\r\n") == 2
    assert b"other-tunnel" not in out and b"evil" not in out


def test_a_bare_lf_after_an_overlong_request_line_gets_the_same_verdict_at_any_split():
    stream = fill([GET], VISITOR) + b"GET /" + b"a" * (MAX_LINE_SIZE + 10) + b" HTTP/1.1\nHost: x\n\n"
    out, refused = refusal_at_every_split(stream)
    assert refused is None  # given up on as too long before the LF could be seen


# What a connection's last read of whole requests became is remembered (HostRewriter.feed),
# and its last header block's (HostRewriter._rewritten_again): a repeated request, and
# requests that differ in their request line only, are rewritten from them.


def test_a_request_repeated_on_a_connection_becomes_the_same_bytes_each_time():
    forwarded = Forwarded("198.51.100.7", "https")
    expected = HostRewriter(TARGET.decode(), forwarded).feed(fill([GET], VISITOR))
    rewriter = HostRewriter(TARGET.decode(), forwarded)
    assert [rewriter.feed(fill([GET], VISITOR)) for _ in range(3)] == [expected] * 3
    assert b"X-Forwarded-For: 198.51.100.7" in expected and b"Host: " + TARGET in expected


def test_the_same_bytes_as_a_body_are_not_taken_for_the_request_they_repeat():
    get = fill([GET], VISITOR)
    rewriter = HostRewriter(TARGET.decode())
    assert rewriter.feed(get) == fill([GET], TARGET)
    assert rewriter.feed(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(get)) \
        == b"POST /echo HTTP/1.1\r\nHost: " + TARGET + b"\r\nContent-Length: %d\r\n\r\n" % len(get)
    assert rewriter.feed(get) == get  # the body, untouched
    assert rewriter.feed(get) == fill([GET], TARGET)  # a request again


def test_repeated_requests_split_across_reads_are_followed_as_before():
    get = fill([GET], VISITOR)
    pieces = [get + get[:10], get[10:]] * 2
    rewriter = HostRewriter(TARGET.decode())
    assert b"".join(rewriter.feed(piece) for piece in pieces) == fill([GET] * 4, TARGET)


def test_every_repeated_request_is_shown_to_on_head():
    seen = []
    rewriter = HostRewriter(TARGET.decode(), on_head=lambda lines: seen.append(lines[0]) or lines)
    for _ in range(3):
        assert rewriter.feed(fill([GET], VISITOR)) == fill([GET], TARGET)
    assert seen == [b"GET / HTTP/1.1"] * 3


def test_a_repeated_upgrade_request_is_rewritten_each_time():
    upgrade = fill([WEBSOCKET_UPGRADE], VISITOR)
    rewriter = HostRewriter(TARGET.decode())
    assert rewriter.feed(upgrade) == fill([WEBSOCKET_UPGRADE], TARGET)
    assert rewriter.feed(upgrade) == fill([WEBSOCKET_UPGRADE], TARGET)  # the target refused: a request
    assert rewriter.feed(b"\x81\x00") == b"\x81\x00"  # then the WebSocket's bytes


def test_a_visitors_forwarded_values_are_made_once_and_kept_apart():
    assert forwarded_for("198.51.100.7", "https") is forwarded_for("198.51.100.7", "https")
    assert forwarded_for("198.51.100.7", "http") is not forwarded_for("198.51.100.7", "https")
    assert forwarded_for("198.51.100.8", "https").client == b"198.51.100.8"


def test_requests_with_the_same_headers_keep_their_own_request_lines():
    forwarded = Forwarded("198.51.100.7", "https")
    rewriter = HostRewriter(TARGET.decode(), forwarded)
    for path in (b"/a", b"/b?x=1", b"/c"):
        head = fill([request(b"GET " + path + b" HTTP/1.1", b"Host: {host}", b"Accept: */*")], VISITOR)
        assert rewriter.feed(head) == HostRewriter(TARGET.decode(), forwarded).feed(head)
        assert rewriter.feed(head).startswith(b"GET " + path + b" HTTP/1.1\r\nHost: " + TARGET)


def test_a_header_that_changes_is_rewritten_anew():
    rewriter = HostRewriter(TARGET.decode(), Forwarded("198.51.100.7", "https"))
    first = rewriter.feed(fill([request(b"GET / HTTP/1.1", b"Host: {host}")], VISITOR))
    second = rewriter.feed(fill([request(b"GET / HTTP/1.1", b"Host: {host}", b"X-Forwarded-For: 10.0.0.1")], VISITOR))
    assert b"X-Forwarded-For: 198.51.100.7\r\n" in first
    assert b"X-Forwarded-For: 10.0.0.1, 198.51.100.7\r\n" in second
    body = rewriter.feed(fill([with_length(b"POST / HTTP/1.1", b"abc")], VISITOR))
    assert body.endswith(b"Content-Length: 3\r\n" + b"X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\n"
                         b"X-Forwarded-Host: " + VISITOR + b"\r\n\r\nabc")


def test_an_absolute_form_request_after_an_origin_form_one_gets_its_host_each_time():
    rewriter = HostRewriter(TARGET.decode())
    assert rewriter.feed(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n") == b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"
    for _ in range(2):
        out = rewriter.feed(b"GET http://admin.internal/x HTTP/1.1\r\nAccept: */*\r\n\r\n")
        assert out == b"GET /x HTTP/1.1\r\nHost: " + TARGET + b"\r\nAccept: */*\r\n\r\n"


def test_a_request_read_again_after_a_refused_upgrade_does_not_let_a_bare_lf_request_through():
    # After an Upgrade the next bytes are judged by how they start; a repeated request
    # must be read as one (which ends that state), not served from the memory of it.
    poll = fill([GET], VISITOR)
    rewriter = HostRewriter(TARGET.decode())
    rewriter.feed(poll)
    rewriter.feed(fill([WEBSOCKET_UPGRADE], VISITOR))  # the target refuses, and reads on
    assert rewriter.feed(poll) == fill([GET], TARGET)
    assert rewriter.feed(b"GET /admin HTTP/1.1\nHost: internal.example\n\n") == b""
    assert rewriter.refused == 400
