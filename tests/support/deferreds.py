"""Helpers shared by the pure unit tests (test_auth, test_registry): synchronous Deferreds."""

from twisted.python.failure import Failure


def outcome(d):
    """What an already-fired Deferred holds: its result or a Failure."""
    box = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0]


def succeeded(d):
    result = outcome(d)
    if isinstance(result, Failure):
        raise AssertionError(f"the Deferred failed: {result.getTraceback()}")
    return result


def failed(d, exception_type):
    """The exception an already-failed Deferred holds, which must be an `exception_type`."""
    result = outcome(d)
    assert isinstance(result, Failure), f"the Deferred succeeded with {result!r}"
    assert result.check(exception_type), result.getTraceback()
    return result.value
