"""How many idle messages a tunnel may send: a token bucket, free of I/O.

Data for a live conversation is paid for by the socket it is written to (flow control);
everything else a client sends costs the server work and moves nothing: pause and resume,
messages for ids that are not open, pings.  A client that sends those faster than
IDLE_RATE (beyond a burst of IDLE_BURST) has its tunnel's reading held for THROTTLE
seconds at a time; one that keeps it up for PATIENCE seconds without letting the bucket
fill again is closed (codec.CLOSE_TOO_MANY_MESSAGES).

Why an honest client never comes near: ours sends P when a target's socket buffer fills
(Twisted's 64 KiB) and C once it has drained, so a P and a C take at least 64 KiB written
to that target: 5000 a second would mean 160 MB/s through targets that each fill and
drain completely, per tunnel, for seconds on end.  A message for an id that is not open
follows the end of a conversation, at most a socket read's worth in flight, one or a few
per conversation; its pings come every 15 s.  500 conversations (the client's default
--max-conversations) pausing and resuming all at once are 1000 messages, a tenth of the
burst.  A flood is 100 times the rate: 300 000 tiny messages a second from one socket.
"""

IDLE_RATE = 5000.0  # messages per second, sustained
IDLE_BURST = 10000  # messages at once, after a quiet spell (2 s at the rate)
THROTTLE = 0.1  # seconds a tunnel over its budget is not read (it then earns 500)
PATIENCE = 10.0  # seconds over budget, the bucket never full again, before it is closed

WITHIN = "within"  # go on
THROTTLED = "throttled"  # hold the tunnel's reading for THROTTLE seconds
EXHAUSTED = "exhausted"  # close the tunnel


class IdleBudget:
    """The token bucket of one tunnel; `spend(now)` for each idle message."""

    def __init__(self, rate=IDLE_RATE, burst=IDLE_BURST, patience=PATIENCE):
        self.rate = rate
        self.burst = burst
        self.patience = patience
        self.tokens = float(burst)
        self.updated = None
        self.over_since = None  # when the bucket first ran dry since it was last full

    def spend(self, now):
        """One idle message at `now` (seconds): WITHIN, THROTTLED or EXHAUSTED."""
        if self.updated is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= self.burst:
            self.over_since = None  # quiet long enough to fill the bucket: a fresh start
        self.tokens -= 1
        if self.tokens >= 0:
            return WITHIN
        self.tokens = 0.0  # no debt: a held tunnel earns from nothing, a quiet one fills up
        if self.over_since is None:
            self.over_since = now
        if now - self.over_since >= self.patience:
            return EXHAUSTED
        return THROTTLED
