"""Property tests (hypothesis) for the pure parsers: head reader, codec, Host rewriter."""

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpot.http.head import HeadError, HeadReader, RequestHead
from tpot.http.rewrite import HostRewriter
from tpot.protocol import codec

bounded = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

TARGET = b"localhost:8080"


def split(data, cuts):
    """`data` cut at the given positions (taken modulo its length, in any order)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


cut_lists = st.lists(st.integers(min_value=0, max_value=100_000), max_size=12)

# Pieces that steer random streams into the interesting paths of the parsers.
HTTP_PIECES = [
    b"GET / HTTP/1.1", b"POST /p?q=1 HTTP/1.0", b"CONNECT a:443 HTTP/1.1", b"GET /a b HTTP/1.1",
    b"\r\n", b"\r\n\r\n", b"\r", b"\n", b" ", b":", b"\t",
    b"Host: a.example", b"host:B.EXAMPLE:80", b"Host: [::1]:3", b"Content-Length: 3", b"Content-Length: 0",
    b"Content-Length: x", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip", b"Connection: Upgrade",
    b"Upgrade: websocket", b"3", b"0", b"a;ext=1", b"abc", b"X-Trailer: 1", b"\x00", b"\x16\x03", b"\xff",
]
http_ish = st.lists(st.one_of(st.sampled_from(HTTP_PIECES), st.binary(max_size=8)), max_size=40).map(b"".join)
any_bytes = st.one_of(st.binary(max_size=300), http_ish)


# The head reader.


def read_head(chunks):
    """The head or the HeadError status after feeding chunks until a head is returned."""
    reader = HeadReader()
    try:
        for chunk in chunks:
            head = reader.feed(chunk)
            if head is not None:
                return head
    except HeadError as error:
        assert error.status in (400, 431)
        return error.status
    return None


TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"


def expected_head(data):
    """What the reader must make of `data` (well under 8 KiB), worked out independently:
    None (incomplete), 400, or (request line parts, [(name, value)])."""
    if data[:1] and data[0] < 0x21:
        return 400
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    first, *lines = data[:end].split(b"\r\n")
    line = re.fullmatch(rb"(%s) (\S+) HTTP/(1\.[0-9])" % TOKEN, first)
    if line is None:
        return 400
    headers = []
    for header in lines:
        name, colon, value = header.partition(b":")
        if not colon or not re.fullmatch(TOKEN, name):
            return 400
        headers.append((name.decode().lower(), value.strip(b" \t").decode("latin-1")))
    return tuple(part.decode("latin-1") for part in line.groups()), headers


# Heads that are mostly well formed, so that every branch of the reader is reached often.
HEADER_LINES = [b"Host: a.example", b"host:B.EXAMPLE:80", b"HOST:\t[::1]:3 \t", b"Connection: keep-alive, Upgrade",
                b"X-Empty:", b"Bad Name: x", b"no colon", b"Content-Length: 3", b":x"]
head_ish = st.tuples(
    st.sampled_from([b"GET / HTTP/1.1", b"POST /p?subdomain=x HTTP/1.0", b"GET /a b HTTP/1.1", b"GET / HTTP/2.0"]),
    st.lists(st.sampled_from(HEADER_LINES), max_size=5),
    st.sampled_from([b"\r\n\r\n", b"\r\n\r\n", b"\r\n"]),
    st.binary(max_size=10),
).map(lambda parts: b"\r\n".join([parts[0], *parts[1]]) + parts[2] + parts[3])


@bounded
@given(st.one_of(head_ish, any_bytes), cut_lists)
def test_head_reader_returns_the_head_exactly_when_it_is_complete(data, cuts):
    result = read_head([data])
    expected = expected_head(data)
    if isinstance(result, RequestHead):
        assert ((result.method, result.target, result.version), result.headers) == expected
        assert isinstance(result.host, str)
        result.query("subdomain")
        result.header_tokens("connection")
    else:
        assert result == expected
    assert read_head(split(data, cuts)) == result


# The codec.

ids = st.integers(min_value=0, max_value=0xFFFF)
messages = st.one_of(
    st.builds(codec.Greeting, st.text(st.characters(max_codepoint=127), max_size=30)),
    st.builds(codec.OpenHTTP, ids, st.ip_addresses(v=4).map(str), ids),
    st.builds(codec.Data, ids, st.binary(max_size=200)),
    *(st.builds(kind, ids) for kind in (codec.Pause, codec.Resume, codec.Close, codec.NoConnect)),
)
message_like = st.one_of(
    st.binary(max_size=50),
    st.tuples(st.sampled_from([b"\x11", b"\x12", b"\x11G", b"\x11GTPoT/1 ", b"\x11H", b"\x12\x01\x00"]),
              st.binary(max_size=20)).map(b"".join),
)
ALL = codec.FROM_CLIENT | codec.FROM_SERVER


@bounded
@given(message_like)
def test_decode_returns_a_message_or_raises_protocol_error(payload):
    try:
        message = codec.decode(payload, ALL)
    except codec.ProtocolError:
        return
    assert type(message) in ALL
    # Every accepted message has one encoding (IPv6 opens need the ipv6 extension).
    assert codec.encode(message, ipv6=True) == payload


@bounded
@given(messages)
def test_encode_decode_round_trip(message):
    assert codec.decode(codec.encode(message), ALL) == message


# IPv6 visitors other than IPv4-mapped ones, which travel as IPv4.
ipv6_opens = st.builds(
    codec.OpenHTTP, ids, st.ip_addresses(v=6).filter(lambda address: address.ipv4_mapped is None).map(str), ids
)


@bounded
@given(ipv6_opens)
def test_ipv6_opens_round_trip_with_the_extension(message):
    assert codec.decode(codec.encode(message, ipv6=True), ALL) == message


# The Host rewriter on generated keep-alive streams.

tokens = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).map(str.encode)
header_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20).map(str.encode)
other_headers = st.lists(
    st.tuples(st.sampled_from([b"X-Forwarded-Host", b"Hostname", b"X-Host", b"Accept", b"User-Agent", b"X-Id"]),
              header_values).map(lambda pair: pair[0] + b": " + pair[1]),
    max_size=4,
)


def chunk(data, extension):
    return b"%x%s\r\n%s\r\n" % (len(data), extension, data)


@st.composite
def bodies(draw):
    """(framing headers, body bytes) for a request."""
    kind = draw(st.sampled_from(["none", "length", "chunked"]))
    if kind == "none":
        return [], b""
    if kind == "length":
        body = draw(st.binary(max_size=60) | st.just(b"GET / HTTP/1.1\r\nHost: inside\r\n\r\n"))
        return [b"Content-Length: %d" % len(body)], body
    pieces = draw(st.lists(st.tuples(st.binary(min_size=1, max_size=30),
                                     st.sampled_from([b"", b";a=b", b" ; x"])), max_size=4))
    trailers = draw(st.lists(st.sampled_from([b"X-Sum: 1", b"Host: trailer"]), max_size=2))
    body = b"".join(chunk(data, ext) for data, ext in pieces) + b"0\r\n" + b"".join(t + b"\r\n" for t in trailers)
    return [b"Transfer-Encoding: chunked"], body + b"\r\n"


@st.composite
def requests(draw):
    """(input bytes, expected bytes) of one request, with or without a Host header."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]))
    target = b"/" + draw(tokens)
    version = draw(st.sampled_from([b"1.1", b"1.0"]))
    headers = draw(other_headers)
    framing, body = draw(bodies())
    headers = headers + framing
    host = draw(st.none() | header_values.filter(bool))
    position = draw(st.integers(min_value=0, max_value=len(headers)))

    def build(host_value):
        lines = list(headers)
        if host is not None:
            lines.insert(position, b"Host: " + host_value)
        return b"\r\n".join([b"%s %s HTTP/%s" % (method, target, version), *lines]) + b"\r\n\r\n" + body

    return build(host), build(TARGET)


@st.composite
def streams(draw):
    """A keep-alive stream, sometimes ending in an upgrade followed by the new protocol's
    bytes: arbitrary, after a first byte that no request starts with, as a WebSocket
    frame's (a request pipelined after an upgrade is rewritten: test_rewrite)."""
    pairs = draw(st.lists(requests(), min_size=1, max_size=5))
    stream = b"".join(given for given, _ in pairs)
    expected = b"".join(wanted for _, wanted in pairs)
    if draw(st.booleans()):
        upgrade = b"GET /ws HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        after = draw(st.one_of(st.just(b""), st.builds(lambda first, rest: bytes([first]) + rest,
                                                        st.integers(0x80, 0xFF), any_bytes)))
        stream += upgrade % b"visitor.example" + after
        expected += upgrade % TARGET + after
    return stream, expected


def rewrite(chunks):
    rewriter = HostRewriter(TARGET.decode())
    output = b"".join(rewriter.feed(chunk) for chunk in chunks)
    return output, rewriter._buffer  # what it still holds, waiting for the end of a head or line


@bounded
@given(streams(), cut_lists)
def test_rewriter_replaces_only_host_values_at_any_split(pair, cuts):
    stream, expected = pair
    assert rewrite([stream]) == (expected, b"")
    assert rewrite(split(stream, cuts)) == (expected, b"")


@bounded
@given(any_bytes, cut_lists)
def test_rewriter_never_raises_and_is_split_invariant_on_arbitrary_bytes(data, cuts):
    whole = rewrite_with_verdict([data])
    assert rewrite_with_verdict(split(data, cuts)) == whole
    assert rewrite_with_verdict([data[i:i + 1] for i in range(len(data))]) == whole
    output, pending, refused = whole
    if refused is not None:
        # A request with bare-LF lines: what came before it went on, nothing from it on.
        assert refused == 400 and data.startswith(output) and pending == b""
    elif b"host" not in data.lower():
        assert output + pending == data


def rewrite_with_verdict(chunks):
    rewriter = HostRewriter(TARGET.decode())
    output = b"".join(rewriter.feed(chunk) for chunk in chunks)
    return output, rewriter._buffer, rewriter.refused
