"""The status area's numbers (tpot.client.stats): counts, the per-minute rate over its
sliding window, percentiles over the last responses, the ping round trip; all bounded."""

from tpot.client.requestlog import ConnectionEntry, Entry
from tpot.client.stats import PING_PREFIX, RoundTrips, TrafficStats


def entry(duration, path="/x"):
    return Entry("GET", path, 200, 2, duration)


def test_connections_count_opened_and_still_open():
    stats = TrafficStats()
    for _ in range(3):
        stats.opened()
    stats.closed()
    assert (stats.connections_total, stats.connections_open) == (3, 2)


def test_open_connections_never_go_below_zero():
    stats = TrafficStats()
    stats.closed()
    stats.opened()
    assert (stats.connections_total, stats.connections_open) == (1, 1)


def test_nothing_yet():
    stats = TrafficStats()
    assert stats.requests_total == 0
    assert stats.requests_per_minute(100.0) == 0
    assert stats.percentile(0.5) is None and stats.percentile(0.9) is None
    assert list(stats.recent) == []


def test_requests_per_minute_counts_the_last_60_seconds():
    stats = TrafficStats()
    for second in range(0, 30):  # one a second for 30 s
        stats.request(entry(0.001), 1000.0 + second + 0.5)
    assert stats.requests_per_minute(1030.0) == 30
    assert stats.requests_per_minute(1059.9) == 30
    # A minute after the first ones they leave the window, one second at a time.
    assert stats.requests_per_minute(1060.0) == 29
    assert stats.requests_per_minute(1075.0) == 14
    assert stats.requests_per_minute(1200.0) == 0
    assert stats.requests_total == 30


def test_a_burst_in_one_second_is_one_bucket():
    stats = TrafficStats()
    for _ in range(500):
        stats.request(entry(0.001), 7.25)
    assert stats.requests_per_minute(7.9) == 500
    assert len(stats._per_second) == 1


def test_a_shorter_window_is_scaled_to_a_minute():
    stats = TrafficStats(window=10)
    for second in range(10):
        stats.request(entry(0.001), second)
    assert stats.requests_per_minute(9.5) == 60


def test_the_rate_window_is_bounded_by_its_seconds():
    stats = TrafficStats()
    for second in range(10_000):
        stats.request(entry(0.001), float(second))
    assert len(stats._per_second) <= 60


def test_percentiles_by_nearest_rank():
    stats = TrafficStats()
    for ms in range(1, 11):  # 1 .. 10 ms, out of order
        stats.request(entry(((ms * 7) % 10 + 1) / 1000), 0.0)
    assert stats.percentile(0.5) == 0.005
    assert stats.percentile(0.9) == 0.009
    assert stats.percentile(1.0) == 0.010


def test_one_response_is_every_percentile():
    stats = TrafficStats()
    stats.request(entry(0.042), 0.0)
    assert stats.percentile(0.5) == stats.percentile(0.9) == 0.042


def test_percentiles_are_over_the_last_samples_only():
    stats = TrafficStats(samples=10)
    for _ in range(100):
        stats.request(entry(5.0), 0.0)  # slow, long ago
    for _ in range(10):
        stats.request(entry(0.002), 1.0)
    assert stats.percentile(0.9) == 0.002
    assert len(stats._durations) == 10


def test_recent_lines_keep_the_last_ones_oldest_first():
    stats = TrafficStats(recent=3)
    for i in range(5):
        stats.request(entry(0.001, f"/{i}"), 0.0)
    tcp = ConnectionEntry("127.0.0.1:5000", "closed", 1, 2, 0.5)
    stats.connection(tcp)
    assert [e.path for e in list(stats.recent)[:2]] == ["/3", "/4"]
    assert stats.recent[-1] is tcp
    assert stats.requests_total == 5  # a TCP connection is no request


def test_a_round_trip_is_the_time_from_ping_to_its_pong():
    trips = RoundTrips()
    payload = trips.ping(10.0)
    assert payload.startswith(PING_PREFIX) and len(payload) <= 125  # a control frame's limit
    assert trips.latest is None
    assert trips.pong(payload, 10.25) == 0.25 and trips.latest == 0.25


def test_one_ping_at_a_time_and_stray_pongs_are_ignored():
    trips = RoundTrips()
    first = trips.ping(1.0)
    assert trips.ping(2.0) is None  # still waiting for the first
    assert trips.pong(b"autobahn keepalive", 2.5) is None
    assert trips.pong(first, 3.0) == 2.0
    second = trips.ping(4.0)
    assert second != first
    assert trips.pong(first, 4.5) is None  # a late duplicate of the old one
    assert trips.pong(second, 4.001) is not None


def test_a_lost_connection_forgets_its_ping_but_keeps_the_last_value():
    trips = RoundTrips()
    trips.pong(trips.ping(1.0), 1.5)
    trips.ping(2.0)
    trips.forget()
    assert trips.latest == 0.5
    assert trips.ping(3.0) is not None
