"""Who may open a tunnel or connect to a TCP tunnel: the TPoT-1 and TPoT-Secret checks.

`Authenticator` runs the TPoT-1 check with the KDF in a bounded thread pool, refuses
replays and rate-limits failures per address (tpot.protocol.auth holds the pure parts).
The replay cache and the failure limiter are injected (IReplayCache,
IFailureLimiter), so that nodes of a cluster can share them; either may answer
with a Deferred.
"""

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Interface, classImplements

from tpot.http.head import HeadError
from tpot.protocol import auth

# KDF jobs waiting for the pool; beyond them 503 at once (the pool is tpot.server.tap's).
MAX_PENDING_AUTH = 16
CREATE_REFUSAL = "Authentication failed: check the client's auth key and clock."
CONNECT_REFUSAL = "Authentication failed: check the tunnel's access secret (or the server's auth key) and your clock."
# What a connection to a TCP tunnel proved, by the index auth.verify_any returns.
PROVED = ("access secret", "server key")


class IReplayCache(Interface):
    """Nonces already accepted.  Nodes sharing one (a shared store) refuse a header
    replayed to any of them; such an implementation may return a Deferred."""

    def remember(credentials, now):
        """Record `credentials.nonce` at `now` (ms); raise AuthError if it was seen and
        has not expired."""


class IFailureLimiter(Interface):
    """Failed attempts per source address.  Shared by several nodes, it limits a source
    across all of them; such an implementation may return Deferreds."""

    def retry_after(source, now):
        """Seconds `source` must wait at `now` (ms) before trying again, or None."""

    def failed(source, now):
        """Count a failed attempt by `source` at `now` (ms)."""

    def forgive(source, since):
        """Take back one failure counted at `since` (ms): an attempt counted while in
        flight that succeeded after all."""


# Declared here rather than in the pure tpot.protocol.auth, which knows no zope.interface.
classImplements(auth.ReplayCache, IReplayCache)
classImplements(auth.FailureLimiter, IFailureLimiter)


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

    def spend(self, header):
        """Use up the nonce of a header refused before its check (a bad name, a tunnel not
        connected, draining): a captured header must not work later for another request."""
        try:
            credentials = auth.parse_authorization(header, (auth.SCHEME, auth.SECRET_SCHEME))
        except auth.AuthError:
            return
        self._spend(credentials, self.clock_ms()).addErrback(self._log_store_failure, "spending a nonce")

    def _spend(self, credentials, now):
        """A Deferred of whether this is the first time the nonce is seen; it is used up either way."""
        d = defer.maybeDeferred(self.replays.remember, credentials, now)
        return d.addCallbacks(lambda _: True, lambda failure: failure.trap(auth.AuthError) and False)

    def _prove(self, keys, header, source, refusal, name=None):
        # A fresh Deferred that fires with the answer: the inner one counts as called while
        # it waits on the KDF or on a shared cache.
        answer = defer.Deferred()
        self._proof(keys, header, source, refusal, name).chainDeferred(answer)
        return answer

    @defer.inlineCallbacks
    def _proof(self, keys, header, source, refusal, name):
        """Both checks: one replay cache, failure limiter and KDF bound.  TPoT-1 tries all
        `keys` in one KDF job; TPoT-Secret (only where `name` is given) proves keys[0].
        With the in-process cache and limiter every step up to the KDF runs at once."""
        now = self.clock_ms()
        schemes = (auth.SCHEME,) if name is None else (auth.SCHEME, auth.SECRET_SCHEME)
        try:
            credentials, problem = auth.parse_authorization(header, schemes), None
        except auth.AuthError as error:
            credentials, problem = None, error
        # Spent whatever comes next, a 429 included.
        if credentials is not None and not (yield self._spend(credentials, now)):
            problem = auth.AuthError("replayed Authorization header")
        retry_after = yield self.failures.retry_after(source, now)
        if retry_after is not None:
            raise HeadError(
                429, "Too many failed authentication attempts; wait before retrying.",
                [("Retry-After", str(retry_after))],
            )
        try:
            if problem is not None:
                raise problem
            auth.check_fresh(credentials, now)
        except auth.AuthError as error:
            raise self._refusal(error, source, refusal) from None
        # Counted as failed until it succeeds: attempts in flight count against the limit,
        # so concurrent guesses from one address cannot each get a KDF run.
        yield self.failures.failed(source, now)
        try:
            proved = yield self._verify(keys, credentials, name)
        except auth.AuthError as error:
            raise self._refusal(error, source, refusal, counted=True) from None
        except HeadError:
            self._forgive(source, now)
            raise
        self._forgive(source, now)
        return proved

    def _verify(self, keys, credentials, name):
        """A Deferred of the index of the key the credentials prove."""
        if credentials.scheme == auth.SECRET_SCHEME:
            # An HMAC takes microseconds: checked here, not queued for the KDF pool.
            return defer.maybeDeferred(auth.verify_secret, keys[0], name, credentials).addCallback(lambda _: 0)
        if self._pending >= self.max_pending:
            return defer.fail(HeadError(503, "The server is busy checking credentials; retry shortly."))
        self._pending += 1
        return self.run_kdf(auth.verify_any, keys, credentials).addBoth(self._done)

    def _done(self, result):
        self._pending -= 1
        return result

    def _forgive(self, source, since):
        d = defer.maybeDeferred(self.failures.forgive, source, since)
        d.addErrback(self._log_store_failure, "taking back an authentication failure")

    def _refusal(self, error, source, refusal, counted=False):
        if not counted:
            d = defer.maybeDeferred(self.failures.failed, source, self.clock_ms())
            # Not waited for: a shared limiter that cannot count must not turn a 401 into a 500.
            d.addErrback(self._log_store_failure, "counting an authentication failure")
        self.log.info("authentication refused for {source}: {reason}", source=source, reason=str(error))
        return HeadError(401, refusal)

    def _log_store_failure(self, failure, doing):
        self.log.failure(doing, failure)
