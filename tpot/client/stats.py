"""What the status area shows about a run's traffic, computed without I/O (sans-I/O).

`TrafficStats` is told of visitor connections opening and closing and of each logged
request (a requestlog.Entry), with the time of each event from whatever clock the caller
uses; it answers totals, requests per minute over a sliding window and response-time
percentiles over the last responses, and keeps the last request lines for the screen.
`RoundTrips` pairs the pings the client sends to the server with their pongs.  Everything
kept is bounded: the window by its seconds, the samples and lines by their counts.
"""

from collections import deque

RATE_WINDOW = 60  # seconds of requests counted in the per-minute rate
PERCENTILE_SAMPLES = 1000  # response times the percentiles are taken over
RECENT_LINES = 100  # request lines kept for the screen (a terminal shows fewer)
PING_PREFIX = b"tpot-rtt "


class TrafficStats:
    def __init__(self, samples=PERCENTILE_SAMPLES, recent=RECENT_LINES, window=RATE_WINDOW):
        self.connections_total = 0
        self.connections_open = 0
        self.requests_total = 0
        self.window = window
        self._per_second = deque()  # [whole second, requests in it], oldest first, within the window
        self._durations = deque(maxlen=samples)
        self.recent = deque(maxlen=recent)  # the last entries, oldest first

    def opened(self):
        self.connections_total += 1
        self.connections_open += 1

    def closed(self):
        # Never below zero, whatever order a broken caller reports in.
        self.connections_open = max(0, self.connections_open - 1)

    def request(self, entry, now):
        """A request was answered (its entry logged) at `now`, in seconds."""
        self.requests_total += 1
        self.recent.append(entry)
        self._durations.append(entry.duration)
        second = int(now)
        if self._per_second and self._per_second[-1][0] == second:
            self._per_second[-1][1] += 1
        else:
            self._per_second.append([second, 1])
        self._expire(now)

    def connection(self, entry):
        """A TCP connection ended (a requestlog.ConnectionEntry): kept for the screen."""
        self.recent.append(entry)

    def requests_per_minute(self, now):
        """Requests answered in the last `window` seconds, scaled to one minute."""
        self._expire(now)
        count = sum(n for _, n in self._per_second)
        return count * 60 / self.window

    def percentile(self, fraction):
        """The response time (seconds) that `fraction` of the last responses did not
        exceed (nearest rank), or None before any response."""
        if not self._durations:
            return None
        ordered = sorted(self._durations)
        rank = max(1, -(-len(ordered) * fraction // 1))  # ceil, at least the first
        return ordered[int(rank) - 1]

    def _expire(self, now):
        # Whole seconds: a second is counted for the full window, then dropped at once.
        oldest = int(now) - self.window
        while self._per_second and self._per_second[0][0] <= oldest:
            self._per_second.popleft()


class RoundTrips:
    """The round trip of a ping: `ping(now)` gives the payload to send (None while one is
    still unanswered, so at most one is out), `pong(payload, now)` the round trip in
    seconds when the payload is that ping's, else None.  `latest`: the last round trip."""

    def __init__(self):
        self.latest = None
        self._sent = None  # (payload, time) of the ping awaiting its pong
        self._count = 0

    def ping(self, now):
        if self._sent is not None:
            return None
        self._count += 1
        payload = PING_PREFIX + str(self._count).encode()
        self._sent = (payload, now)
        return payload

    def pong(self, payload, now):
        if self._sent is None or payload != self._sent[0]:
            return None  # Autobahn's own keepalive pings, or a stray pong
        self.latest = max(0.0, now - self._sent[1])
        self._sent = None
        return self.latest

    def forget(self):
        """The connection is gone: a new one starts with no ping out (and the last value kept)."""
        self._sent = None
