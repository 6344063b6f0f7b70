"""The request-head parser, plus the pure decisions taken on a head (route, create request)."""


import pytest

from tests.support.fixtures import SESSION
from tpot.http.head import MAX_FIRST_HEAD_SIZE, HeadError, HeadReader, RequestHead, parse_head, parse_host
from tpot.server.requests import check_create_request
from tpot.server.router import CONTROL, route

REFERENCE_CREATE = SESSION["events"][0]["http_head"].encode("latin-1") + b"\r\n\r\n"

SIMPLE = b"GET /path?a=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: t\r\n\r\n"
WEBSOCKET = (
    b"GET /create-tpot?subdomain=Demo HTTP/1.1\r\n"
    b"Host: localhost:3000\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Upgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def read(*chunks, max_size=MAX_FIRST_HEAD_SIZE):
    """Feed chunks; return (head or None, reader)."""
    reader = HeadReader(max_size)
    head = None
    for chunk in chunks:
        head = reader.feed(chunk)
        if head is not None:
            break
    return head, reader


def request(*header_lines, line=b"GET / HTTP/1.1"):
    return b"\r\n".join((line, *header_lines)) + b"\r\n\r\n"


def head_of(*header_lines, line=b"GET / HTTP/1.1"):
    head, _ = read(request(*header_lines, line=line))
    return head


# Complete heads.


def test_complete_head():
    head, reader = read(SIMPLE)
    assert head == RequestHead("GET", "/path?a=1", "1.1", [("host", "Example.COM:8080"), ("user-agent", "t")])
    assert head.host == "example.com"
    assert head.path == "/path"
    assert reader.buffered == SIMPLE


@pytest.mark.parametrize(
    "line, method, target, version",
    [
        (b"GET / HTTP/1.1", "GET", "/", "1.1"),
        (b"POST /submit HTTP/1.0", "POST", "/submit", "1.0"),
        (b"OPTIONS * HTTP/1.1", "OPTIONS", "*", "1.1"),
        (b"CONNECT example.com:443 HTTP/1.1", "CONNECT", "example.com:443", "1.1"),
        (b"GET http://a.example/x HTTP/1.1", "GET", "http://a.example/x", "1.1"),
        (b"M-SEARCH * HTTP/1.1", "M-SEARCH", "*", "1.1"),
        (b"GET /caf\xc3\xa9 HTTP/1.1", "GET", "/caf\xc3\xa9", "1.1"),
    ],
)
def test_request_line(line, method, target, version):
    head = head_of(b"Host: a", line=line)
    assert (head.method, head.target, head.version) == (method, target, version)


def test_head_without_headers():
    head = head_of(line=b"GET / HTTP/1.0")
    assert head.headers == [] and head.host == ""


def test_header_names_are_lower_cased_and_values_trimmed():
    head = head_of(b"X-Thing:   spaced \t", b"EMPTY:", b"X-Thing: second", b"Colon: a:b:c")
    assert head.headers == [("x-thing", "spaced"), ("empty", ""), ("x-thing", "second"), ("colon", "a:b:c")]
    assert head.header("X-THING") == "spaced"
    assert head.header("empty") == ""
    assert head.header("missing") is None


def test_header_values_are_latin1():
    assert head_of(b"X: caf\xe9").header("x") == "caf\xe9"


def test_body_bytes_after_the_head_stay_buffered():
    stream = request(b"Host: a", b"Content-Length: 11", line=b"POST / HTTP/1.1") + b"hello world"
    head, reader = read(stream)
    assert head.method == "POST"
    assert reader.buffered == stream


def test_pipelined_second_request_stays_buffered():
    stream = request(b"Host: a") + request(b"Host: b")
    head, reader = read(stream)
    assert head.host == "a"
    assert reader.buffered == stream


# Splitting.


@pytest.mark.parametrize("stream", [SIMPLE, WEBSOCKET, REFERENCE_CREATE + b"extra bytes"], ids=["simple", "ws", "ref"])
def test_head_split_at_every_byte_position(stream):
    whole, _ = read(stream)
    for cut in range(1, len(stream)):
        reader = HeadReader()
        first = reader.feed(stream[:cut])
        end = stream.index(b"\r\n\r\n") + 4
        if cut < end:
            assert first is None, cut
            assert reader.feed(stream[cut:]) == whole, cut
            assert reader.buffered == stream, cut
        else:
            assert first == whole, cut
            assert reader.buffered == stream[:cut], cut


def test_head_fed_one_byte_at_a_time():
    reader = HeadReader()
    results = [reader.feed(SIMPLE[i:i + 1]) for i in range(len(SIMPLE))]
    assert results[:-1] == [None] * (len(SIMPLE) - 1)
    assert results[-1] == parse_head(SIMPLE[:-4])
    assert reader.buffered == SIMPLE


def test_empty_feed_is_harmless():
    reader = HeadReader()
    assert reader.feed(b"") is None
    assert reader.feed(SIMPLE) is not None


def test_terminator_split_across_three_feeds():
    reader = HeadReader()
    assert reader.feed(b"GET / HTTP/1.1\r\nHost: a\r") is None
    assert reader.feed(b"\n\r") is None
    assert reader.feed(b"\n").host == "a"


# Size limit.


def padded_head(total):
    """A valid head of exactly `total` bytes, blank line included."""
    start = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: "
    return start + b"p" * (total - len(start) - 4) + b"\r\n\r\n"


def test_head_of_exactly_the_limit_is_accepted():
    head, _ = read(padded_head(MAX_FIRST_HEAD_SIZE))
    assert head.host == "a"


@pytest.mark.parametrize("chunks", [1, 2, 100], ids=lambda n: f"{n}-chunks")
def test_head_one_byte_over_the_limit_is_431(chunks):
    stream = padded_head(MAX_FIRST_HEAD_SIZE + 1)
    size = -(-len(stream) // chunks)
    with pytest.raises(HeadError) as error:
        read(*(stream[i:i + size] for i in range(0, len(stream), size)))
    assert error.value.status == 431


def test_endless_head_is_431_without_waiting_for_its_end():
    reader = HeadReader()
    assert reader.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_FIRST_HEAD_SIZE - 30)) is None
    with pytest.raises(HeadError) as error:
        reader.feed(b"a" * 100)
    assert error.value.status == 431


def test_custom_limit():
    with pytest.raises(HeadError) as error:
        read(SIMPLE, max_size=len(SIMPLE) - 1)
    assert error.value.status == 431
    assert read(SIMPLE, max_size=len(SIMPLE))[0] is not None


# Malformed heads.


@pytest.mark.parametrize(
    "stream",
    [
        b"GET /\r\nHost: a\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / http/1.1\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"hello\r\n\r\n",
    ],
)
def test_bad_request_line_is_400(stream):
    with pytest.raises(HeadError) as error:
        read(stream)
    assert error.value.status == 400


@pytest.mark.parametrize(
    "first_bytes",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"\x00",
        b"\r\nGET / HTTP/1.1\r\n",
        b" GET / HTTP/1.1\r\n",
    ],
)
def test_tls_or_binary_first_byte_is_400_at_once(first_bytes):
    with pytest.raises(HeadError) as error:
        HeadReader().feed(first_bytes[:1])
    assert error.value.status == 400
    with pytest.raises(HeadError):
        HeadReader().feed(first_bytes)


@pytest.mark.parametrize(
    "header_line",
    [b"No colon here", b"Bad Name: x", b"Host : a", b" folded: x", b"\tfolded", b": empty name", b"X\x01: y",
     b"Na(me: x"],
)
def test_malformed_header_is_400(header_line):
    with pytest.raises(HeadError) as error:
        read(request(b"Host: a", header_line))
    assert error.value.status == 400


def test_head_error_carries_status_and_reason():
    error = HeadError(418, "short and stout")
    assert (error.status, error.reason, str(error)) == (418, "short and stout", "short and stout")


# Host.


@pytest.mark.parametrize(
    "value, host",
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com"),
        ("example.com:", "example.com"),
        ("example.com.", "example.com"),
        ("Example.com.:443", "example.com"),
        ("  spaced.example  ", "spaced.example"),
        ("[::1]", "[::1]"),
        ("[::1]:3000", "[::1]"),
        ("[2001:DB8::1]:80", "[2001:db8::1]"),
        ("127.0.0.1:3000", "127.0.0.1"),
        ("", ""),
        ("a:b:c", ""),
        ("host:port", ""),
        ("[::1", ""),
    ],
)
def test_parse_host(value, host):
    assert parse_host(value) == host


def test_host_property_uses_first_host_header():
    assert head_of(b"host: First.example:1", b"Host: second.example").host == "first.example"


# Query and header tokens.


@pytest.mark.parametrize(
    "target, name, value",
    [
        ("/create-tpot?subdomain=demo", "subdomain", "demo"),
        ("/create-tpot?a=1&subdomain=x&subdomain=y", "subdomain", "x"),
        ("/create-tpot?subdomain=a%2Db", "subdomain", "a-b"),
        ("/create-tpot?subdomain=", "subdomain", None),
        ("/create-tpot", "subdomain", None),
        ("/create-tpot?other=1", "subdomain", None),
        ("/p?q=a+b", "q", "a b"),
    ],
)
def test_query(target, name, value):
    assert RequestHead("GET", target, "1.1").query(name) == value


def test_path_drops_the_query():
    assert RequestHead("GET", "/create-tpot?subdomain=x", "1.1").path == "/create-tpot"


def test_header_tokens_merge_every_header_and_lower_case():
    head = head_of(b"Connection: keep-alive, Upgrade", b"connection: X-Other ,  close", b"Upgrade: WebSocket")
    assert head.header_tokens("connection") == {"keep-alive", "upgrade", "x-other", "close"}
    assert head.header_tokens("Upgrade") == {"websocket"}
    assert head.header_tokens("missing") == set()


# Routing by host.


@pytest.mark.parametrize(
    "host, domain, target",
    [
        ("localhost", "localhost", CONTROL),
        ("demo.localhost", "localhost", "demo"),
        ("demo.tunnel.example", "tunnel.example", "demo"),
        ("tunnel.example", "tunnel.example", CONTROL),
        ("a.b.tunnel.example", "tunnel.example", None),
        ("other.example", "tunnel.example", None),
        (".localhost", "localhost", None),
        ("demolocalhost", "localhost", None),
        ("", "localhost", None),
    ],
)
def test_route(host, domain, target):
    assert route(host, domain) == target


# The create request.


def test_reference_client_create_request_is_valid():
    head, _ = read(REFERENCE_CREATE)
    assert check_create_request(head) == "wire"


@pytest.mark.parametrize(
    "target, name",
    [("/create-tpot?subdomain=Demo", "demo"), ("/create-tpot", None), ("/create-tpot?subdomain=", None),
     ("/create-tpot?subdomain=" + "a" * 24, "a" * 24)],
)
def test_create_request_names(target, name):
    head, _ = read(WEBSOCKET.replace(b"/create-tpot?subdomain=Demo", target.encode()))
    assert check_create_request(head) == name


@pytest.mark.parametrize(
    "old, new, status",
    [
        (b"GET /create-tpot?", b"GET /other?", 404),
        (b"GET /create-tpot?", b"POST /create-tpot?", 405),
        (b"HTTP/1.1\r\nHost", b"HTTP/1.0\r\nHost", 400),
        (b"Upgrade: websocket", b"Upgrade: h2c", 400),
        (b"Connection: keep-alive, Upgrade", b"Connection: keep-alive", 400),
        (b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8", 400),
        (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"", 400),
        (b"subdomain=Demo", b"subdomain=-demo", 400),
        (b"subdomain=Demo", b"subdomain=" + b"a" * 25, 400),
        (b"subdomain=Demo", b"subdomain=a.b", 400),
        (b"subdomain=Demo", b"subdomain=a_b", 400),
    ],
)
def test_invalid_create_requests(old, new, status):
    head, _ = read(WEBSOCKET.replace(old, new))
    with pytest.raises(HeadError) as error:
        check_create_request(head)
    assert error.value.status == status
