"""What every part of the benchmark shares: where things are, the fixed sizes, the error
it stops on, progress lines, and the tail of a log."""

import sys
import time
from pathlib import Path

from tests.support.processes import HOST  # noqa: F401 (everything runs on 127.0.0.1)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TARGETS = REPO / "bench" / "targets"
DOMAIN = "localhost"
START_TIMEOUT = 20.0
SMALL_BODY = b"hello\n"  # 6 bytes
MEDIUM_SIZE = 100 * 1024
BULK_SIZE = 16 * 1024 * 1024


class BenchError(Exception):
    """Something the benchmark cannot continue after; one sentence for the user."""


def log(message):
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def tail(path, lines=5):
    try:
        return " | ".join(Path(path).read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
