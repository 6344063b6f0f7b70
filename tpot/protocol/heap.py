"""Keeping the garbage collector's full collections short, on both ends.

A full collection scans every object the collector tracks, and most of those are what the
process made to start: modules, classes, Twisted's and Autobahn's tables.  Under a stream
of new conversations (whose objects survive the young collections while they are open) a
full collection came about once a second: over 5 s of new connections (22.6k requests) the
client's took 58 ms in all (about 2.5 us per request) and the server's 25 ms; frozen, 1 ms
or less.  Frozen once the reactor runs, those objects are never scanned again; they were
never going to be freed anyway.
"""

import gc


# Young collections far less often than Python's default (every 700 allocations): a
# conversation's objects live for milliseconds, so a young collection every few requests
# found most of them alive and passed them on to the older generations to be scanned
# again; one every several hundred requests finds them freed.  Cycles are rare here (ended
# conversations break theirs), so garbage waits no longer in practice.
YOUNG_THRESHOLD = 200_000


def freeze_once_running(reactor):
    """Freeze what exists when `reactor` starts running (a memory reactor never does),
    and collect the young generation less often from then on."""
    reactor.callWhenRunning(_settle)


def _settle():
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
