"""The server's log observers: twistd's own or, with `--log-format json`, one JSON object
per line on stdout for container log collectors; either without debug events."""

import json
import sys

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    PredicateResult,
    formatEvent,
)


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


# What every Twisted factory says as it starts and stops unless told not to (`noisy`), at
# info level, naming an object by its address: debug, for a person.
FACTORY_ANNOUNCEMENTS = ("Starting factory {factory!r}", "Stopping factory {factory!r}")


def _info_and_above(event):
    level = event.get("log_level", LogLevel.info)
    if level < LogLevel.info or event.get("log_format") in FACTORY_ANNOUNCEMENTS:
        return PredicateResult.no
    return PredicateResult.maybe


def without_debug(observer):
    """`observer` for events at info level and above: debug events (Twisted's own words
    for each port and factory it starts, say) reach only an observer given to twistd with
    --logger."""
    return FilteringLogObserver(observer, [_info_and_above])


def twistd_observer(twistd_options):
    """The observer twistd would make from `twistd_options` (stdout with -n, --logfile or
    twistd.log, --syslog), as a twisted.logger observer."""
    # twistd offers no other way to wrap the observer it chooses.
    from twisted.scripts._twistd_unix import UnixAppLogger

    observer = UnixAppLogger(twistd_options)._getLogObserver()
    return observer if ILogObserver.providedBy(observer) else LegacyLogObserverWrapper(observer)
