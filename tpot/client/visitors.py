"""What the client does with visitors besides relaying them: the request log
(tpot.client.requestlog) and who may visit (tpot.client.policy), chosen by the settings."""

from dataclasses import dataclass

from tpot.client.policy import VisitorPolicy
from tpot.client.requestlog import RequestLogger


@dataclass(frozen=True)
class VisitorOptions:
    """`log` (None with --quiet), `policy` (None without --basic-auth and --allow-ip),
    `clock` (an IReactorTime) for the log's timings."""

    clock: object
    log: RequestLogger = None
    policy: VisitorPolicy = None

    @classmethod
    def for_settings(cls, settings, clock, out):
        """The options for these settings, or None when there is neither a log nor a policy."""
        log = None if settings.quiet else RequestLogger(out)
        policy = None
        if settings.basic_auth or settings.allow_ip:
            policy = VisitorPolicy(settings.basic_auth, settings.allow_ip)
        return cls(clock, log, policy) if log is not None or policy is not None else None
