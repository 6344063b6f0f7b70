"""The scenarios, each measured directly and through the tunnel in alternation: HTTP
(`http`), raw TCP (`tcp`), and the idle-memory measurements (`memory`)."""

from collections import namedtuple

from bench.common import log
from bench.procfs import cpu_by_name

# run: what one figure does (its arguments depend on the kind of scenario); cpu_unit: what
# its CPU seconds are divided by in the report ("req", "transfer" or "connection").
Scenario = namedtuple("Scenario", "key title run cpu_unit")


def measure(fn, pids):
    """fn()'s result dict, with the CPU seconds each of `pids` ({name: [pid, ...]}) spent in it."""
    before = cpu_by_name(pids)
    result = fn()
    after = cpu_by_name(pids)
    result["cpu_s"] = {name: round(after[name] - before[name], 3) for name in pids}
    return result


def alternate(scenarios, repeat, sides, out, between):
    """`repeat` rounds of every scenario on every side in turn; out[key][side] lists the results.

    sides: (side, function(scenario) -> result) pairs; between() runs after each scenario's pair.
    """
    for sc in scenarios:
        out[sc.key] = {"title": sc.title, "cpu_unit": sc.cpu_unit, **{side: [] for side, _ in sides}}
    for rep in range(repeat):
        for sc in scenarios:
            for side, run_on in sides:
                log(f"round {rep + 1}/{repeat}: {sc.title}: {side}")
                out[sc.key][side].append(run_on(sc))
            between()
