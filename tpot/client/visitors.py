"""What the client does with visitors besides relaying them: the request log
(tpot.client.requestlog), who may visit (tpot.client.policy), chosen by the settings, and
the inspector's capture (tpot.client.inspector)."""

from dataclasses import dataclass

from tpot.client.policy import VisitorPolicy
from tpot.client.requestlog import RequestLogger


@dataclass(frozen=True)
class VisitorOptions:
    """`log` (None with --quiet), `policy` (None without --basic-auth and --allow-ip),
    `clock` (an IReactorTime) for the log's timings, `inspected` (the tunnel's
    InspectedTunnel, None without the inspector), `meter` (told `opened()` and `closed()`
    of each visitor connection: the status area's counts; None without it)."""

    clock: object
    log: RequestLogger = None
    policy: VisitorPolicy = None
    inspected: object = None
    meter: object = None

    @classmethod
    def for_settings(cls, settings, clock, out, inspected=None, console=None):
        """The options for these settings, or None when there is no log, policy, inspector
        or status area.  `console` (tpot.client.console), when given, takes the request log
        and the connection counts instead of plain lines on `out`."""
        log = None if settings.quiet else (console or RequestLogger(out))
        policy = None
        if settings.basic_auth or settings.allow_ip:
            policy = VisitorPolicy(settings.basic_auth, settings.allow_ip)
        if log is None and policy is None and inspected is None and console is None:
            return None
        return cls(clock, log, policy, inspected, console)
