"""tpot.protocol.budget: the token bucket for a tunnel's idle messages, on explicit times."""

from tpot.protocol.budget import EXHAUSTED, IDLE_BURST, IDLE_RATE, PATIENCE, THROTTLED, WITHIN, IdleBudget


def spend(budget, count, now):
    return [budget.spend(now) for _ in range(count)]


def test_a_burst_is_within_then_throttled():
    budget = IdleBudget(rate=100, burst=50, patience=10)
    assert spend(budget, 50, 0.0) == [WITHIN] * 50
    assert budget.spend(0.0) == THROTTLED


def test_the_bucket_refills_at_the_rate_up_to_the_burst():
    budget = IdleBudget(rate=100, burst=50, patience=10)
    spend(budget, 50, 0.0)
    assert spend(budget, 10, 0.1) == [WITHIN] * 10  # 0.1 s earned 10
    assert budget.spend(0.1) == THROTTLED
    assert spend(budget, 50, 100.0) == [WITHIN] * 50  # full again, never more than the burst
    assert budget.spend(100.0) == THROTTLED


def test_staying_over_budget_for_the_patience_exhausts_it():
    budget = IdleBudget(rate=100, burst=50, patience=10)
    now, results = 0.0, []
    while now <= 12:  # twice the rate, every 0.1 s
        results.append((now, spend(budget, 20, now)[-1]))
        now = round(now + 0.1, 1)
    first = next(at for at, result in results if result == EXHAUSTED)
    over_since = next(at for at, result in results if result == THROTTLED)
    assert first - over_since >= 10 and first - over_since < 10.2
    assert all(result != EXHAUSTED for at, result in results if at < first)


def flood(budget, start, end):
    """Twice the rate (100/s), every 0.1 s from `start` to `end`: the last result."""
    result, now = None, start
    while now < end:
        result = spend(budget, 20, now)[-1]
        now = round(now + 0.1, 1)
    return result


def test_a_full_bucket_forgives_the_past():
    budget = IdleBudget(rate=100, burst=50, patience=10)
    assert flood(budget, 0.0, 8.0) == THROTTLED
    # A second's quiet fills the bucket: the patience starts again with the next flood.
    assert flood(budget, 9.0, 17.0) == THROTTLED
    assert flood(budget, 17.0, 20.0) == EXHAUSTED


def test_an_honest_pace_is_never_throttled():
    # Just under the rate for a minute, with bursts of IDLE_BURST / 10 (500 conversations
    # pausing and resuming together).
    budget = IdleBudget()
    step, per_step = 0.1, int(IDLE_RATE * 0.1 * 0.9)
    results = set()
    for i in range(600):
        results.update(spend(budget, per_step + (IDLE_BURST // 10 if i % 50 == 0 else 0), i * step))
    assert results == {WITHIN}
    assert PATIENCE > 1
