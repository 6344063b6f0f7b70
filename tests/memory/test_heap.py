"""tpot.protocol.heap: what exists once the reactor runs is frozen, and nothing before."""

import gc

from twisted.internet.testing import MemoryReactor

from tpot.protocol.heap import freeze_once_running


def test_frozen_once_the_reactor_runs():
    reactor = MemoryReactor()
    before = gc.get_freeze_count()
    freeze_once_running(reactor)
    assert gc.get_freeze_count() == before  # not yet running
    try:
        for hook, args, kwargs in reactor.whenRunningHooks:
            hook(*args, **kwargs)
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()  # the rest of the test run collects as usual
