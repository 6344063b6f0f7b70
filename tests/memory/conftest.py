"""Fixtures the in-memory protocol tests share; a module may define its own of the same name."""

import pytest
from twisted.internet.testing import MemoryReactorClock

from tests.support.memory import NOW_MS, SERVER_KEY, MemoryServer, use_clock


def _running(server):
    restore = use_clock(server.clock)
    yield server
    restore()


@pytest.fixture
def clock():
    """A memory reactor for a client, with Autobahn's timers on it."""
    clock = MemoryReactorClock()
    restore = use_clock(clock)
    yield clock
    restore()


@pytest.fixture
def server():
    """A whole server in memory, with Autobahn's timers on its clock."""
    yield from _running(MemoryServer())


@pytest.fixture
def keyed():
    """The same with the auth key SERVER_KEY, its clock at NOW_MS."""
    yield from _running(MemoryServer(key=SERVER_KEY, clock_ms=lambda: NOW_MS))
