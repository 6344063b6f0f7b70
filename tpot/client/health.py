"""Whether the target answers, and the warnings on stderr when that changes.

`TargetHealth` is sans-I/O: told of each attempt to connect to the target (a visitor's
conversation, or the one check at start-up) and whether it worked, it says when to warn:
once as connecting starts failing, once as it works again, never per request.  The state:

    UNKNOWN --fails at start-up--> DOWN   (NOT_LISTENING: "nothing is listening ... yet")
    UNKNOWN or UP --fails--> DOWN         (WENT_DOWN: "... is not answering (why) ...")
    DOWN --connects--> UP                 (CAME_BACK: "... answers again.")
    UNKNOWN --connects--> UP              (nothing to say: it answered all along)

`TargetWarnings` writes what TargetHealth says to stderr (the request log on stdout is
another matter: these warnings are shown with --quiet too).  `failure_reason` puts why a
connection failed into a few words, from the error's class name (no framework imported).
"""

import enum
import sys

from tpot.http.addresses import format_address
from tpot.protocol.codec import TCP

REFUSED = "connection refused"
TLS_FAILED = "TLS handshake failed"
# Twisted's connection errors (twisted.internet.error), by name, in words for the log line.
_REASONS = {
    "ConnectionRefusedError": REFUSED,
    "DNSLookupError": "name does not resolve",
    "TimeoutError": "timed out",
    "TCPTimedOutError": "timed out",
    "NoRouteError": "no route to the host",
}


def failure_reason(error):
    """A few words for why a connection to the target could not be made (`error`: an exception)."""
    return _REASONS.get(type(error).__name__, "could not connect")


class Change(enum.Enum):
    NOT_LISTENING = "nothing listens at the target since start-up"
    WENT_DOWN = "connecting to the target started failing"
    CAME_BACK = "connecting to the target works again"


class TargetHealth:
    """Whether the last attempt to connect to the target worked (`answering`: None until one is made)."""

    def __init__(self):
        self.answering = None

    def connected(self):
        """A connection to the target was made: CAME_BACK if it was down, else None."""
        was, self.answering = self.answering, True
        return Change.CAME_BACK if was is False else None

    def failed(self, at_start=False):
        """A connection could not be made (`at_start`: the check at start-up): the warning
        due, or None when it is down already."""
        was, self.answering = self.answering, False
        if was is False:
            return None
        return Change.NOT_LISTENING if at_start and was is None else Change.WENT_DOWN


def warning_text(warning, target, reason, tcp=False):
    """The line for `warning` about `target` (host:port) failing for `reason` (failure_reason's words)."""
    if warning is Change.CAME_BACK:
        return f"tpot: the target {target} answers again."
    fail = "connections through the tunnel fail" if tcp else "visitors get 502"
    if warning is Change.NOT_LISTENING and reason == REFUSED:
        will = "connections through the tunnel will fail" if tcp else "visitors will get 502"
        return f"tpot: nothing is listening on {target} yet; {will} until it is."
    return f"tpot: the target {target} is not answering ({reason}); {fail} until it is."


class TargetWarnings:
    """One tunnel's TargetHealth, its warnings written to `err` (sys.stderr when None,
    looked up when written so that it is whatever stderr is then)."""

    def __init__(self, target, tcp=False, err=None):
        self.target = target
        self.tcp = tcp
        self.err = err
        self.health = TargetHealth()

    @classmethod
    def for_settings(cls, settings, err=None):
        return cls(format_address((settings.target.host, settings.target.port)), settings.kind == TCP, err)

    def connected(self):
        self._say(self.health.connected(), None)

    def failed(self, reason, at_start=False, text=None):
        """A connection failed for `reason`; `text`, when given, is said instead of the
        usual warning (a TLS failure says what to do about it)."""
        warning = self.health.failed(at_start)
        self._say(warning, reason, text if warning is not None else None)

    def _say(self, warning, reason, text=None):
        if warning is None:
            return
        err = self.err or sys.stderr
        err.write((text or warning_text(warning, self.target, reason, self.tcp)) + "\n")
        err.flush()
