"""`--log-format json`: one JSON object per line on stdout, for container log collectors."""

import json
import sys

from twisted.logger import formatEvent


def json_line(event):
    record = {
        "time": round(event.get("log_time", 0), 3),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    return json.dumps(record, sort_keys=True)


def json_observer(stream=None):
    """A twistd log observer factory (twistd --logger=tpot.server.logs.json_observer)."""
    out = sys.stdout if stream is None else stream

    def observe(event):
        out.write(json_line(event) + "\n")
        out.flush()

    return observe
