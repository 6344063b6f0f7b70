"""The shared framing's shortcut: a header block's plain Content-Length, read without the
general parser, and always the length the general parser would frame."""

import pytest

from tpot.http.framing import BODY, HEAD, MessageFraming, parse_headers, plain_content_length

BLOCKS = {
    b"\r\nContent-Length: 6\r\n": 6,
    b"\r\nServer: nginx\r\ncontent-length:0\r\nETag: \"x\"\r\n": 0,
    b"\r\nCONTENT-LENGTH: \t 1048577  \r\n": 1048577,
    b"\r\n": None,  # no headers: the body runs until the connection closes
    b"\r\nServer: nginx\r\n": None,
    b"\r\nContent-Length : 6\r\n": None,  # the general parser strips the name: its call
    b"\r\n Content-Length: 6\r\n": None,
    b"\r\nContent-Length: 6\r\nContent-Length: 6\r\n": None,
    b"\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n": None,
    b"\r\nVary: Transfer-Encoding\r\nContent-Length: 6\r\n": None,
    b"\r\nAccess-Control-Expose-Headers: Content-Length\r\nContent-Length: 6\r\n": None,
    b"\r\nX-Content-Length: 6\r\n": None,
    b"\r\nContent-Length: -1\r\n": None,
    b"\r\nContent-Length: 6, 6\r\n": None,
    b"\r\nContent-Length: 0x10\r\n": None,
    b"\r\nContent-Length:\r\n": None,
}


class _General(MessageFraming):
    """The general parser's verdict on a response head: what `_frame_body` makes of it."""

    def verdict(self, block):
        self._frame_body(parse_headers([b"HTTP/1.1 200 OK", *block[2:-2].split(b"\r\n")]), until_close=True)
        if self.state == BODY:
            return self._remaining
        return 0 if self.state == HEAD else None


@pytest.mark.parametrize("block", BLOCKS)
def test_a_plain_content_length_is_read_and_anything_else_left_to_the_general_parser(block):
    assert plain_content_length(block) == BLOCKS[block]


@pytest.mark.parametrize("block", BLOCKS)
def test_the_shortcut_never_disagrees_with_the_general_parser(block):
    length = plain_content_length(block)
    if length is not None:
        assert _General().verdict(block) == length
