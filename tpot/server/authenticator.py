"""Who may open a tunnel or connect to a TCP tunnel: the TPoT-1 and TPoT-Secret checks.

`Authenticator` runs the TPoT-1 check with the KDF in a bounded thread pool, refuses
replays and rate-limits failures per address (tpot.protocol.auth holds the pure parts).
The replay cache and the failure limiter are injected (auth.IReplayCache,
auth.IFailureLimiter), so that nodes of a cluster can share them; either may answer
with a Deferred.
"""

from twisted.internet import defer
from twisted.logger import Logger

from tpot.http.head import HeadError
from tpot.protocol import auth

MAX_PENDING_AUTH = 64
CREATE_REFUSAL = "Authentication failed: check the client's auth key and clock."
CONNECT_REFUSAL = "Authentication failed: check the tunnel's access secret (or the server's auth key) and your clock."
# What a connection to a TCP tunnel proved, by the index auth.verify_any returns.
PROVED = ("access secret", "server key")


class Authenticator:
    """Checks TPoT-1 headers against the server's key (or a TCP tunnel's secret), refusing replays.

    `run_kdf(f, *args)` returns a Deferred; the service gives it a bounded thread pool so
    the 32768-round KDF never runs on the reactor thread.
    """

    log = Logger()

    def __init__(self, key, run_kdf, clock_ms=auth.now_ms, max_pending=MAX_PENDING_AUTH, replays=None,
                 failures=None):
        self.key = key
        self.run_kdf = run_kdf
        self.clock_ms = clock_ms
        self.max_pending = max_pending
        self.replays = auth.ReplayCache() if replays is None else replays
        self.failures = auth.FailureLimiter() if failures is None else failures
        self._pending = 0

    def check(self, header, source=""):
        """A Deferred firing if the header authorises a tunnel, failing with HeadError if not."""
        if self.key is None:
            return defer.succeed(None)
        return self._prove((self.key,), header, source, CREATE_REFUSAL).addCallback(lambda _: None)

    def check_access(self, secret, header, source="", name=""):
        """For a connection to TCP tunnel `name`, which always needs proof: a Deferred firing
        with what the header proved (PROVED: the tunnel's secret, by TPoT-Secret or TPoT-1,
        or the server's key by TPoT-1), failing with HeadError if it proves neither."""
        keys = (secret,) if self.key is None else (secret, self.key)
        d = self._prove(keys, header, source, CONNECT_REFUSAL, name)
        return d.addCallback(PROVED.__getitem__)

    def _prove(self, keys, header, source, refusal, name=None):
        """Both checks: one replay cache, failure limiter and KDF bound.  TPoT-1 tries all
        `keys` in one KDF job; TPoT-Secret (only where `name` is given) proves keys[0]."""
        d = defer.maybeDeferred(self.failures.retry_after, source, self.clock_ms())
        d.addCallback(self._unless_blocked, keys, header, source, refusal, name)
        # A fresh Deferred that fires with the answer: `d` itself counts as called while
        # it waits on the KDF or on a shared cache.
        answer = defer.Deferred()
        d.chainDeferred(answer)
        return answer

    def _unless_blocked(self, retry_after, keys, header, source, refusal, name):
        if retry_after is not None:
            raise HeadError(
                429, "Too many failed authentication attempts; wait before retrying.",
                [("Retry-After", str(retry_after))],
            )
        schemes = (auth.SCHEME,) if name is None else (auth.SCHEME, auth.SECRET_SCHEME)
        try:
            credentials = auth.parse_authorization(header, schemes)
            auth.check_fresh(credentials, self.clock_ms())
        except auth.AuthError as error:
            raise self._refusal(error, source, refusal) from None
        if credentials.scheme == auth.SECRET_SCHEME:
            # An HMAC takes microseconds: checked here, not queued for the KDF pool.
            d = defer.maybeDeferred(auth.verify_secret, keys[0], name, credentials)
            d.addCallback(lambda _: 0)
        else:
            if self._pending >= self.max_pending:
                raise HeadError(503, "The server is busy checking credentials; retry shortly.")
            self._pending += 1
            d = self.run_kdf(auth.verify_any, keys, credentials)
            d.addBoth(self._done)
        d.addCallback(self._accepted, credentials)
        d.addErrback(self._refuse_auth_failure, source, refusal)
        return d

    def _done(self, result):
        self._pending -= 1
        return result

    def _accepted(self, proved, credentials):
        # A replay raises AuthError here (or fails the Deferred of a shared cache).
        d = defer.maybeDeferred(self.replays.remember, credentials, self.clock_ms())
        return d.addCallback(lambda _: proved)

    def _refuse_auth_failure(self, failure, source, refusal):
        failure.trap(auth.AuthError)
        raise self._refusal(failure.value, source, refusal)

    def _refusal(self, error, source, refusal):
        counted = defer.maybeDeferred(self.failures.failed, source, self.clock_ms())
        # Not waited for: a shared limiter that cannot count must not turn a 401 into a 500.
        counted.addErrback(lambda failure: self.log.failure("counting an authentication failure", failure))
        self.log.info("authentication refused for {source}: {reason}", source=source, reason=str(error))
        return HeadError(401, refusal)
