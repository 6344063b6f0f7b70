"""The inspector part of the report (bench/scenarios/inspector.py): keep-alive req/s and the
client's CPU per request with the inspector on and off, and the client's memory holding
and evicting 1 MiB exchanges."""

import statistics

def summary(inspector):
    """Medians: req/s and client µs per request on and off, on/off, and the memory figures."""
    keepalive = inspector.get("keepalive", {})
    medians = {}
    for side in ("off", "on"):
        runs = keepalive.get(side, [])
        medians[side] = {
            "req_s": statistics.median(r["req_s"] for r in runs) if runs else None,
            "client_us_per_req": statistics.median(r["client_us_per_req"] for r in runs
                                                   if r["client_us_per_req"] is not None) if runs else None,
        }
    off, on = medians["off"]["req_s"], medians["on"]["req_s"]
    return {**medians, "on_over_off": on / off if on and off else None, "memory": inspector.get("memory")}


def inspector_lines(inspector):
    if not inspector:
        return []
    if "error" in inspector:
        return ["", f"inspector part failed: {inspector['error']}"]
    s = summary(inspector)
    result = ["", "inspector (client with it on against off; keep-alive 6 B, wrk -t1 -c50):"]
    for side in ("off", "on"):
        figures = s[side]
        result.append(f"  {side:<3}  {_fmt(figures['req_s'], '{:,.0f}')} req/s  "
                      f"{_fmt(figures['client_us_per_req'], '{:.1f}')} µs client CPU per request")
    result.append(f"  on/off req/s: {_fmt(s['on_over_off'], '{:.2f}')}x")
    memory = s["memory"]
    if memory:
        result.append(f"  client RSS: {memory['rss_kb_before'] / 1024:.0f} MiB; with {memory['big_transfers']} exchanges"
                      f" of 1 MiB kept {memory['rss_kb_with_big'] / 1024:.0f} MiB; after {memory['small_transfers']}"
                      f" small ones evicted them ({memory.get('big_left', '?')} left) {memory['rss_kb_after_eviction'] / 1024:.0f} MiB")
    return result


def _fmt(value, pattern):
    return "—" if value is None else pattern.format(value)
