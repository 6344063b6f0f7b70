"""What the workers of one machine tell each other with a handed-over connection, and
which routes a sibling serves (tpot.server.cluster.siblings)."""

import os
import stat

import pytest

from tpot.protocol.codec import HTTP
from tpot.server.cluster.siblings import (
    BadFrame,
    FrameReader,
    Siblings,
    encode,
    make_worker_directory,
    remove_worker_directory,
    socket_path,
)
from tpot.server.store import RemoteRoute, RouteInfo


def test_frames_come_back_whole_however_they_are_split():
    stream = encode("203.0.113.7", 5555, b"GET / HTTP/1.1\r\n\r\n") + encode("::1", 1, b"") + encode("10.0.0.1", 2, b"x")
    for size in (1, 3, len(stream)):
        reader = FrameReader()
        frames = [frame for start in range(0, len(stream), size) for frame in reader.feed(stream[start:start + size])]
        assert frames == [("203.0.113.7", 5555, b"GET / HTTP/1.1\r\n\r\n"), ("::1", 1, b""), ("10.0.0.1", 2, b"x")]


@pytest.mark.parametrize("frame", [
    b"\xff\xff\x00\x01\x00\x00\x00\x00",  # a host of 65535 bytes
    b"\x00\x03\x00\x01\xff\xff\xff\xff",  # 4 GiB of buffered bytes
], ids=["host", "buffered"])
def test_a_frame_beyond_its_bounds_is_refused_before_it_is_buffered(frame):
    with pytest.raises(BadFrame):
        FrameReader().feed(frame)


def route(node):
    return RemoteRoute("demo", node, RouteInfo(HTTP), "address", "lease")


@pytest.mark.parametrize("node, worker", [
    ("box-w1", 1), ("box-w2", 2),
    ("box-w0", None),  # this worker itself
    ("box-w3", None),  # beyond the workers of this machine
    ("other-w1", None), ("box", None), ("box-wx", None), ("box-w1-w1", None),
])
def test_only_the_other_workers_of_this_machine_are_siblings(node, worker):
    assert Siblings(None, "/nowhere", "box", 0, 3).worker_of(route(node)) == worker


def test_the_workers_directory_is_private_and_goes_at_the_end():
    path = make_worker_directory()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    open(socket_path(path, 0), "w").close()
    remove_worker_directory(path)
    assert not os.path.exists(path)
