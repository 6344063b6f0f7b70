"""How the inspector shows captured bytes (tpot.client.inspector.present): heads, bodies by
type, decoding, the hex dump, query parameters, the curl command — all over plain bytes."""

import base64
import gzip
import json
import shlex
import zlib

import pytest

from tpot.client.inspector.present import (HEX_BYTES, MAX_DECODED, MAX_PARTS, curl_command, decode_base64, decode_content,
                                            dechunk, hex_dump, message_body, present_body, present_message,
                                            query_parameters, split_message)

from tests.support.captures import relay


def test_a_message_is_split_into_head_lines_and_body():
    lines, body = split_message(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    assert lines == [b"POST /a HTTP/1.1", b"Host: h", b"Content-Length: 2"] and body == b"hi"


def test_interim_responses_are_skipped_but_a_switch_of_protocols_is_not():
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\nok"
    assert split_message(raw) == ([b"HTTP/1.1 200 OK"], b"ok")
    upgrade = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    assert split_message(upgrade)[0][0] == b"HTTP/1.1 101 Switching Protocols"


def test_an_unfinished_head_is_all_head():
    assert split_message(b"GET / HTTP/1.1\r\nHo") == ([b"GET / HTTP/1.1", b"Ho"], b"")


def test_a_chunked_body_is_shown_without_its_framing():
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"
    assert message_body(raw) == b"abcde"


@pytest.mark.parametrize("cut", range(0, 24))
def test_a_chunked_body_cut_anywhere_gives_what_arrived(cut):
    data = b"3\r\nabc\r\n5\r\nhello\r\n0\r\n\r\n"[:cut]
    assert b"abchello".startswith(dechunk(data))


def test_a_bad_chunk_size_ends_the_body_there():
    assert dechunk(b"3\r\nabc\r\nzz\r\nmore") == b"abc"


def test_headers_are_listed_in_order_and_with_their_case():
    view = present_message(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Thing:  v 1 \r\nx-thing: v2\r\n\r\n")
    assert view["start_line"] == "GET /x HTTP/1.1"
    assert view["headers"] == [["Host", "a"], ["X-Thing", "v 1"], ["x-thing", "v2"]]
    assert view["body"]["kind"] == "empty"


def test_json_is_pretty_printed():
    view = present_body(b'{"b":[1,2],"a":"\xc3\xa9"}', "application/json; charset=utf-8")
    assert view["kind"] == "json" and view["error"] is None
    assert view["text"] == json.dumps({"b": [1, 2], "a": "\u00e9"}, indent=2, ensure_ascii=False)
    assert present_body(b"{}", "application/vnd.api+json")["kind"] == "json"


def test_broken_json_is_shown_as_sent_with_the_position_of_the_error():
    view = present_body(b'{"a": 1,\n "b": }', "application/json")
    assert view["kind"] == "json" and view["text"] == '{"a": 1,\n "b": }'
    assert view["error"].startswith("line 2, column 7: ")


def test_json_nested_past_the_recursion_limit_is_shown_as_text():
    view = present_body(b"[" * 100000 + b"]" * 100000, "application/json")
    assert view["kind"] == "json" and view["error"] and len(view["text"]) == 200000


def test_a_form_is_a_table_of_decoded_fields():
    view = present_body(b"name=J%C3%B6rg+X&empty=&a=1&a=2", "application/x-www-form-urlencoded")
    assert view["kind"] == "form"
    assert view["fields"] == [["name", "J\u00f6rg X"], ["empty", ""], ["a", "1"], ["a", "2"]]


MULTIPART = (b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHello\r\n"
             b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
             b"Content-Type: application/octet-stream\r\n\r\n\x00\x01\x02\r\n--XyZ--\r\n")


def test_multipart_parts_are_listed():
    view = present_body(MULTIPART, 'multipart/form-data; boundary="XyZ"')
    assert view["kind"] == "multipart"
    title, upload = view["parts"]
    assert (title["name"], title["filename"], title["size"], title["preview"]) == ("title", None, 5, "Hello")
    assert (upload["name"], upload["filename"], upload["content_type"], upload["size"]) == \
        ("file", "a.bin", "application/octet-stream", 3)
    assert upload["preview"] == ""
    assert upload["headers"][0] == ["Content-Disposition", 'form-data; name="file"; filename="a.bin"']


def test_multipart_parts_are_bounded_and_no_boundary_falls_back_to_text():
    many = b"".join(b"--b\r\n\r\nx\r\n" for _ in range(MAX_PARTS + 50)) + b"--b--"
    assert len(present_body(many, "multipart/mixed; boundary=b")["parts"]) == MAX_PARTS
    assert present_body(b"hello", "multipart/form-data")["kind"] == "text"


def test_an_image_is_given_as_base64_of_its_type():
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
    view = present_body(png, "image/png")
    assert view["kind"] == "image" and view["media_type"] == "image/png"
    assert base64.b64decode(view["data"]) == png


def test_an_svg_is_text_not_an_image():
    assert present_body(b"<svg></svg>", "image/svg+xml")["kind"] == "text"


def test_text_is_text_whatever_it_is_labelled_and_binary_is_a_hex_dump():
    assert present_body(b"plain words\n", "")["text"] == "plain words\n"
    assert present_body(b"caf\xc3\xa9", "application/octet-stream")["kind"] == "text"
    binary = bytes(range(256)) * 40
    view = present_body(binary, "application/octet-stream")
    assert view["kind"] == "hex" and view["size"] == len(binary)
    assert view["text"] == hex_dump(binary[:HEX_BYTES])


def test_text_labelled_as_text_with_bad_utf8_is_shown_with_replacements():
    view = present_body(b"bad \xff byte", "text/plain")
    assert view["kind"] == "text" and view["text"] == "bad \ufffd byte"


def test_the_hex_dump_shows_offsets_bytes_and_printable_characters():
    dump = hex_dump(b"Hello, world!\x00\x01\x02\xffZ")
    assert dump.splitlines() == [
        "00000000  48 65 6c 6c 6f 2c 20 77 6f 72 6c 64 21 00 01 02  |Hello, world!...|",
        "00000010  ff 5a                                            |.Z|",
    ]


@pytest.mark.parametrize("coding, encode", [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send it
])
def test_gzip_and_deflate_are_decoded_for_display(coding, encode):
    body = json.dumps({"hello": "world"}).encode()
    view = present_body(encode(body), "application/json", coding)
    assert view["kind"] == "json" and json.loads(view["text"]) == {"hello": "world"}
    assert view["encoding"] in ("gzip", "deflate") and view["size"] == len(body)


def test_a_body_that_does_not_decode_is_shown_as_it_came():
    view = present_body(b"not gzip at all", "text/plain", "gzip")
    assert view["encoding"] is None and view["text"] == "not gzip at all"


def test_decoding_is_bounded():
    bomb = gzip.compress(b"\x00" * (MAX_DECODED * 4))
    decoded, cut = decode_content(bomb, "gzip")
    assert len(decoded) == MAX_DECODED and cut
    view = present_body(bomb, "application/octet-stream", "gzip")
    assert view["truncated"] and view["size"] == MAX_DECODED


def test_a_message_names_its_coding_and_the_display_never_changes_the_capture():
    body = gzip.compress(b"compressed text")
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: text/plain\r\n\r\n" + body
    kept = bytes(raw)
    view = present_message(raw)
    assert view["body"]["text"] == "compressed text" and view["body"]["encoding"] == "gzip"
    assert raw == kept


def test_a_truncated_message_says_so():
    assert present_message(b"POST / HTTP/1.1\r\n\r\nabc", truncated=True)["body"]["truncated"] is True


def test_query_parameters_are_decoded_in_order():
    assert query_parameters("/cb?code=a%2Fb&state=x+y&state=2&flag") == \
        [["code", "a/b"], ["state", "x y"], ["state", "2"], ["flag", ""]]
    assert query_parameters("/no-query") == []
    assert query_parameters("http://[bad/?a=1") == []


def test_base64_that_is_not_base64_is_none():
    assert decode_base64("aGk=") == b"hi"
    assert decode_base64("not base64!") is None
    assert decode_base64(None) is None


def _curl(request, truncated=False):
    harness, store = relay(request, b"HTTP/1.1 204 No Content\r\n\r\n")
    exchange = next(store.newest_first())
    if truncated:
        exchange.request.truncated = True
    return curl_command(exchange, "https://web.example.com")


def test_curl_sends_the_same_request_to_the_public_address_and_is_shell_safe():
    command = _curl(b"POST /hook?x=1 HTTP/1.1\r\nHost: web.localhost:3000\r\nContent-Length: 18\r\n"
                    b"X-Sig: $(rm -rf ~) 'q'\r\nContent-Type: application/json\r\n\r\n{\"a\": \"it's\" }   ")
    words = shlex.split(command)
    assert words == ["curl", "-X", "POST", "-H", "X-Sig: $(rm -rf ~) 'q'", "-H", "Content-Type: application/json",
                     "--data-binary", "{\"a\": \"it's\" }   ", "https://web.example.com/hook?x=1"]


def test_curl_leaves_out_what_curl_or_the_client_sets():
    command = _curl(b"GET / HTTP/1.1\r\nHost: web.localhost:3000\r\nConnection: keep-alive\r\n\r\n")
    assert shlex.split(command) == ["curl", "https://web.example.com/"]


def test_curl_for_a_binary_or_cut_body_reads_it_from_a_file():
    binary = _curl(b"PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n\x00\x01\x02")
    assert "--data-binary @body.bin" in binary and "(3 bytes) is binary" in binary
    cut = _curl(b"PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", truncated=True)
    assert "was cut at 1 MiB" in cut
