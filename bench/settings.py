"""The BENCH_* environment knobs, read and checked once."""

import os
from dataclasses import dataclass

from bench.common import BenchError


def env_int(name, default, minimum=1, maximum=100000):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BenchError(f"{name} must be a whole number, not {raw!r}.") from None
    if not minimum <= value <= maximum:
        raise BenchError(f"{name} must be between {minimum} and {maximum}.")
    return value


def part_mode(name, part):
    """BENCH_CLUSTER, BENCH_TCP, BENCH_INSPECTOR: "1" (default) runs the part, "0" skips it,
    "only" runs it alone."""
    mode = os.environ.get(name, "1").strip().lower() or "1"
    if mode not in ("0", "1", "only"):
        raise BenchError(f"{name} must be 1 (default), 0 (skip {part}) or only, not {mode!r}.")
    return mode


@dataclass(frozen=True)
class Settings:
    duration: int
    repeat: int
    tunnels: int
    visitors: int
    bulk_count: int
    tcp: str  # "1": with the raw TCP part, "0": without, "only": nothing else
    tcp_bytes: int
    tcp_connections: int
    keep_tmp: bool
    request_log: bool
    cluster: str  # "1": with the cluster part, "0": without, "only": nothing else
    registry_names: int
    inspector: str  # "1": with the inspector part, "0": without, "only": nothing else (but nginx)
    reference: str  # BENCH_REFERENCE: the folder of the reference pair, or "" (no side-by-side)
    reference_only: bool  # BENCH_REFERENCE_ONLY=1: the side-by-side alone (but nginx)

    @classmethod
    def from_env(cls):
        reference = os.environ.get("BENCH_REFERENCE", "").strip()
        reference_only = os.environ.get("BENCH_REFERENCE_ONLY", "").strip() == "1"
        if reference_only and not reference:
            raise BenchError("BENCH_REFERENCE_ONLY=1 needs BENCH_REFERENCE=DIR, the reference pair's folder.")
        return cls(
            duration=env_int("BENCH_DURATION", 10, 1, 600),
            repeat=env_int("BENCH_REPEAT", 3, 1, 20),
            tunnels=env_int("BENCH_TUNNELS", 1000, 1, 10000),
            visitors=env_int("BENCH_VISITORS", 5000, 1, 10000),
            bulk_count=env_int("BENCH_BULK_COUNT", 4, 1, 50),
            tcp=part_mode("BENCH_TCP", "the raw TCP part"),
            tcp_bytes=env_int("BENCH_TCP_MB", 64, 1, 4096) * 2**20,
            tcp_connections=env_int("BENCH_TCP_CONNECTIONS", 50, 1, 10000),
            keep_tmp=bool(os.environ.get("BENCH_KEEP_TMP")),
            request_log=os.environ.get("BENCH_REQUEST_LOG") == "1",
            cluster=part_mode("BENCH_CLUSTER", "the cluster part"),
            registry_names=env_int("BENCH_REGISTRY_NAMES", 100_000, 1, 1_000_000),
            inspector=part_mode("BENCH_INSPECTOR", "the inspector part"),
            reference=reference,
            reference_only=reference_only,
        )
