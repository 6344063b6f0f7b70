"""The frames of a link between nodes (tpot.server.cluster.link), as bytes."""

import pytest

from tpot.protocol import codec
from tpot.server.cluster import link


def test_frames_come_out_whole_however_the_bytes_are_cut():
    stream = b"".join([
        link.data_frame(7, b"x" * 70_000),
        link.frame(codec.encode(codec.Pause(7))),
        link.PING_FRAME,
        link.open_frame("demo", codec.OpenHTTP(9, "2001:db8::5", 443)),
    ])
    for piece in (1, 3, 4096, len(stream)):
        reader = link.FrameReader()
        messages = []
        for start in range(0, len(stream), piece):
            messages += reader.feed(stream[start:start + piece])
        assert messages[0] == codec.encode_data(7, b"x" * 70_000)
        assert codec.decode(messages[1], {codec.Pause}) == codec.Pause(7)
        assert messages[2] == bytes([link.PING])
        assert link.read_open(messages[3]) == ("demo", codec.OpenHTTP(9, "2001:db8::5", 443))
        assert len(messages) == 4


@pytest.mark.parametrize("length", [0, link.MAX_FRAME + 1, 2**32 - 1])
def test_a_frame_of_no_bytes_or_over_the_largest_message_is_refused_before_it_is_buffered(length):
    with pytest.raises(link.BadFrame):
        link.FrameReader().feed(length.to_bytes(4, "big") + b"x")


def test_the_largest_message_a_tunnel_carries_fits_a_frame():
    payload = b"y" * (codec.MAX_MESSAGE_SIZE - codec.DATA_HEAD_SIZE)
    assert link.FrameReader().feed(link.data_frame(1, payload)) == [codec.encode_data(1, payload)]


@pytest.mark.parametrize("message", [
    bytes([link.OPEN]) + b"demo",  # no separator
    bytes([link.OPEN]) + b"Not_A_Name\0" + codec.encode(codec.OpenHTTP(1, "192.0.2.1", 80)),
    bytes([link.OPEN]) + b"demo\0" + codec.encode(codec.OpenRaw(1, "192.0.2.1", 80)),  # not an HTTP visitor
    bytes([link.OPEN]) + b"demo\0" + codec.encode(codec.Data(1, b"x")),
    bytes([link.OPEN]) + b"d\xffmo\0" + codec.encode(codec.OpenHTTP(1, "192.0.2.1", 80)),
], ids=["no-separator", "bad-name", "raw", "data", "not-ascii"])
def test_a_malformed_open_is_refused(message):
    with pytest.raises(link.BadFrame):
        link.read_open(message)
