"""What the server, the clients and the raw TCP service logged that looked wrong."""

import re
from collections import Counter
from pathlib import Path

NOTABLE = re.compile(r"#(warn|error|critical)\]|Unhandled|Traceback \(most recent call last\)")
REFUSED = re.compile(r"refused (\d{3}):")
LEVEL = re.compile(r"^\S+ \[[^\]#]*#(\w+)\]")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\S+ ")
# The clients' announcements: expected, and not worth repeating (they hold secrets).
CLIENT_EXPECTED = re.compile(r"^tpot connected$|^http://\S+$|^TCP tunnel \S+ on \S+$|^access secret: \S+$"
                             r"|^connect with: tpot connect .*$|^tpot listening on \S+$|^inspector: \S+$"
                             r"|^Forwarding \S+ -> \S+$")


def read_lines(path):
    try:
        return Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return None


def unexpected(line):
    """A line of a client's (or the service's) log that is not one of its announcements."""
    return bool(line.strip()) and not CLIENT_EXPECTED.match(line.strip())


def unexpected_tail(path, lines=2):
    """The last lines of a log that are not the clients' expected announcements (secrets, URLs)."""
    text = read_lines(path)
    if text is None:
        return "(no log)"
    return " | ".join([line for line in text if unexpected(line)][-lines:]) or "(nothing unexpected in its log)"


def notable(what, line):
    # "server", or a scenario's own name for one ("server (on)"): warnings and errors only.
    if what.split(" (")[0] != "server":  # clients and the raw TCP service: anything unexpected
        return unexpected(line)
    return bool(NOTABLE.search(line)) and not REFUSED.search(line)


def scan_process(what, proc, lines):
    refused = Counter(m.group(1) for line in lines for m in [REFUSED.search(line)] if m)
    levels = Counter(m.group(1) for line in lines for m in [LEVEL.search(line)] if m)
    # Without the timestamp, so that repeated lines count together.
    counts = Counter(TIMESTAMP.sub("", line)[:200] for line in lines if notable(what, line))
    return {
        "exit_status": proc.poll(),
        "refusals_by_status": dict(refused),
        "log_lines": len(lines),
        "log_lines_by_level": dict(levels),
        "notable_lines": [{"count": c, "line": line} for line, c in counts.most_common(10)],
    }


def scan_logs(pairs):
    """{what: report} for (what, process) pairs; processes that never started are left out."""
    report = {}
    for what, proc in pairs:
        lines = read_lines(proc.log_path) if proc is not None else None
        if lines is not None:
            report[what] = scan_process(what, proc, lines)
    return report
