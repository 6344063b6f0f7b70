"""Who may open a tunnel or connect to a TCP tunnel: the TPoT-1 and TPoT-Secret checks.

`Authenticator` runs the TPoT-1 check with the KDF in a bounded thread pool, refuses
replays and rate-limits failures per address (tpot.protocol.auth holds the pure parts).
"""

from twisted.internet import defer
from twisted.logger import Logger

from tpot.http.head import HeadError
from tpot.protocol import auth

# KDF jobs waiting for the pool; beyond them 503 at once (the pool is tpot.server.tap's).
MAX_PENDING_AUTH = 16
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

    def __init__(self, key, run_kdf, clock_ms=auth.now_ms, max_pending=MAX_PENDING_AUTH):
        self.key = key
        self.run_kdf = run_kdf
        self.clock_ms = clock_ms
        self.max_pending = max_pending
        self.replays = auth.ReplayCache()
        self.failures = auth.FailureLimiter()
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
            self._spend(auth.parse_authorization(header, (auth.SCHEME, auth.SECRET_SCHEME)), self.clock_ms())
        except auth.AuthError:
            pass

    def _spend(self, credentials, now):
        """Whether this is the first time the nonce is seen; it is used up either way."""
        try:
            self.replays.remember(credentials, now)
        except auth.AuthError:
            return False
        return True

    def _prove(self, keys, header, source, refusal, name=None):
        """Both checks: one replay cache, failure limiter and KDF bound.  TPoT-1 tries all
        `keys` in one KDF job; TPoT-Secret (only where `name` is given) proves keys[0]."""
        now = self.clock_ms()
        schemes = (auth.SCHEME,) if name is None else (auth.SCHEME, auth.SECRET_SCHEME)
        try:
            credentials, problem = auth.parse_authorization(header, schemes), None
        except auth.AuthError as error:
            credentials, problem = None, error
        # Spent whatever comes next, a 429 included.
        if credentials is not None and not self._spend(credentials, now):
            problem = auth.AuthError("replayed Authorization header")
        retry_after = self.failures.retry_after(source, now)
        if retry_after is not None:
            return defer.fail(HeadError(
                429, "Too many failed authentication attempts; wait before retrying.",
                [("Retry-After", str(retry_after))],
            ))
        try:
            if problem is not None:
                raise problem
            auth.check_fresh(credentials, now)
        except auth.AuthError as error:
            return defer.fail(self._refusal(error, source, refusal))
        # Counted as failed until it succeeds: attempts in flight count against the limit,
        # so concurrent guesses from one address cannot each get a KDF run.
        self.failures.failed(source, now)
        if credentials.scheme == auth.SECRET_SCHEME:
            # An HMAC takes microseconds: checked here, not queued for the KDF pool.
            d = defer.maybeDeferred(auth.verify_secret, keys[0], name, credentials)
            d.addCallback(lambda _: 0)
        else:
            if self._pending >= self.max_pending:
                self.failures.forgive(source, now)
                return defer.fail(HeadError(503, "The server is busy checking credentials; retry shortly."))
            self._pending += 1
            d = self.run_kdf(auth.verify_any, keys, credentials)
            d.addBoth(self._done)
        d.addCallback(self._accepted, source, now)
        d.addErrback(self._refuse_auth_failure, source, refusal)
        return d

    def _done(self, result):
        self._pending -= 1
        return result

    def _accepted(self, proved, source, started):
        self.failures.forgive(source, started)
        return proved

    def _refuse_auth_failure(self, failure, source, refusal):
        failure.trap(auth.AuthError)
        raise self._refusal(failure.value, source, refusal, counted=True)

    def _refusal(self, error, source, refusal, counted=False):
        if not counted:
            self.failures.failed(source, self.clock_ms())
        self.log.info("authentication refused for {source}: {reason}", source=source, reason=str(error))
        return HeadError(401, refusal)
