"""TPoT-1 authentication: the Node.js vectors, freshness, replays, and the server's Authenticator."""

import base64
import hashlib

import pytest
from twisted.internet import defer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support.deferreds import failed, succeeded
from tests.support.fixtures import AUTH_VECTORS, SESSION
from tpot.http.head import HeadError
from tpot.protocol import auth
from tpot.protocol.auth import WINDOW_MS, AuthError, Credentials, ReplayCache
from tpot.server.authenticator import Authenticator, IFailureLimiter, IReplayCache

VECTORS = AUTH_VECTORS
vector_ids = pytest.mark.parametrize("vector", VECTORS, ids=[str(v["timestamp_ms"]) for v in VECTORS])

KEY = "k" * 32
NONCE = base64.b64encode(bytes(range(32))).decode()
T0 = 1_750_000_000_000


def encoded_header(inner):
    return "TPoT-1 " + base64.b64encode(inner).decode()


# The Node.js vectors.


@vector_ids
def test_make_authorization_matches_node(vector):
    assert auth.make_authorization(vector["key"], vector["nonce"], vector["timestamp_ms"]) == vector["authorization"]


@vector_ids
def test_derive_token_matches_node(vector):
    token = auth.derive_token(vector["key"], vector["nonce"], vector["timestamp_ms"])
    assert base64.b64encode(token).decode() == vector["token_base64"]
    assert len(token) == auth.TOKEN_LENGTH


@vector_ids
def test_salt_is_md5_hex_of_nonce_and_timestamp(vector):
    salt = hashlib.md5(f"{vector['nonce']}\n{vector['timestamp_ms']}".encode()).hexdigest()
    assert salt == vector["salt_hex"]
    expected = hashlib.pbkdf2_hmac("sha256", vector["key"].encode(), salt.encode(), 32768, 128)
    assert base64.b64encode(expected).decode() == vector["token_base64"]


@vector_ids
def test_vector_header_parses_and_verifies(vector):
    credentials = auth.parse_authorization(vector["authorization"])
    assert credentials == Credentials(vector["nonce"], vector["timestamp_ms"],
                                      base64.b64decode(vector["token_base64"]))
    auth.check_fresh(credentials, vector["timestamp_ms"])
    auth.verify_token(vector["key"], credentials)


@vector_ids
def test_vector_header_fails_with_a_wrong_key(vector):
    credentials = auth.parse_authorization(vector["authorization"])
    with pytest.raises(AuthError):
        auth.verify_token(vector["key"] + "x", credentials)


def test_header_captured_from_the_reference_client_verifies():
    header = SESSION["events"][0]["http_head"].split("Authorization: ")[1].split("\r\n")[0]
    credentials = auth.parse_authorization(header)
    auth.verify_token(SESSION["auth_key"], credentials)
    with pytest.raises(AuthError):
        auth.verify_token("t" * 40, credentials)


def test_make_authorization_defaults_to_a_fresh_random_nonce():
    first = auth.parse_authorization(auth.make_authorization(KEY))
    second = auth.parse_authorization(auth.make_authorization(KEY))
    assert first.nonce != second.nonce
    assert len(base64.b64decode(first.nonce)) == 32
    auth.check_fresh(first, auth.now_ms())
    auth.verify_token(KEY, first)


def test_a_tampered_token_fails():
    credentials = auth.parse_authorization(auth.make_authorization(KEY, NONCE, T0))
    token = bytes([credentials.token[0] ^ 1]) + credentials.token[1:]
    for bad in (token, credentials.token[:-1], b""):
        with pytest.raises(AuthError):
            auth.verify_token(KEY, Credentials(credentials.nonce, credentials.timestamp_ms, bad))


@pytest.mark.parametrize("change", [{"nonce": NONCE[::-1]}, {"timestamp_ms": T0 + 1}])
def test_the_token_is_bound_to_nonce_and_timestamp(change):
    credentials = auth.parse_authorization(auth.make_authorization(KEY, NONCE, T0))
    moved = Credentials(**{**credentials.__dict__, **change})
    with pytest.raises(AuthError):
        auth.verify_token(KEY, moved)


# Malformed headers.


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "TPoT-1",
        "TPoT-1 ",
        "Basic dXNlcjpwYXNz",
        "Bearer " + base64.b64encode(b"n\n1\nAAAA").decode(),
        "TPoT-2 " + base64.b64encode(b"n\n1\nAAAA").decode(),
        "TPoT-1 !!!not-base64!!!",
        "TPoT-1 bjEKMQ",  # missing padding
        encoded_header(b"n\n1"),
        encoded_header(b"n\n1\nAAAA\nextra"),
        encoded_header(b"n\nabc\nAAAA"),
        encoded_header(b"n\n-5\nAAAA"),
        encoded_header(b"n\n 5\nAAAA"),
        encoded_header(b"n\n\nAAAA"),
        encoded_header(b"\n5\nAAAA"),
        encoded_header(b"n\n5\n!!!!"),
        encoded_header(b"n\n5\nAAA"),
        encoded_header(b"\xff\xfe\n5\nAAAA"),
    ],
)
def test_malformed_headers_raise_auth_error(header):
    with pytest.raises(AuthError):
        auth.parse_authorization(header)


def test_surrounding_whitespace_is_tolerated():
    header = auth.make_authorization(KEY, NONCE, T0)
    assert auth.parse_authorization(f"  {header}  ") == auth.parse_authorization(header)


# Freshness.


@pytest.mark.parametrize("offset", [0, 1, -1, WINDOW_MS, -WINDOW_MS])
def test_fresh_within_60_seconds(offset):
    auth.check_fresh(Credentials("n", T0, b""), T0 + offset)


@pytest.mark.parametrize("offset", [WINDOW_MS + 1, -WINDOW_MS - 1, 10 * WINDOW_MS, -T0])
def test_stale_outside_60_seconds(offset):
    with pytest.raises(AuthError):
        auth.check_fresh(Credentials("n", T0, b""), T0 + offset)


# The replay cache.


def creds(nonce, timestamp_ms=T0):
    return Credentials(nonce, timestamp_ms, b"")


def test_replay_cache_refuses_a_replay():
    cache = ReplayCache()
    cache.remember(creds("a"), T0)
    cache.remember(creds("b"), T0)
    with pytest.raises(AuthError):
        cache.remember(creds("a"), T0 + 1)
    with pytest.raises(AuthError):
        cache.remember(creds("a", T0 + 5), T0 + WINDOW_MS)
    assert len(cache) == 2


def test_replay_cache_forgets_after_expiry():
    cache = ReplayCache()
    cache.remember(creds("a"), T0)
    cache.remember(creds("b", T0 + 30_000), T0 + 30_000)
    with pytest.raises(AuthError):
        cache.remember(creds("a"), T0 + WINDOW_MS)  # still valid at the edge of the window
    cache.remember(creds("c", T0 + WINDOW_MS + 1), T0 + WINDOW_MS + 1)
    assert len(cache) == 2  # "a" has expired, "b" has not
    cache.remember(creds("a", T0 + WINDOW_MS + 1), T0 + WINDOW_MS + 1)
    with pytest.raises(AuthError):
        cache.remember(creds("b", T0 + 30_000), T0 + WINDOW_MS + 2)


def test_replay_cache_is_bounded_and_forgets_the_oldest_first():
    cache = ReplayCache(max_entries=3)
    for index in range(5):
        cache.remember(creds(f"n{index}", T0 + index), T0 + index)
    assert len(cache) == 3
    for kept in ("n2", "n3", "n4"):
        with pytest.raises(AuthError):
            cache.remember(creds(kept), T0 + 10)
    cache.remember(creds("n0"), T0 + 10)
    assert len(cache) == 3


def test_replay_cache_empties_when_everything_expired():
    cache = ReplayCache()
    for index in range(100):
        cache.remember(creds(f"n{index}"), T0)
    cache.remember(creds("late", T0 + 10 * WINDOW_MS), T0 + 10 * WINDOW_MS)
    assert len(cache) == 1


# The server's Authenticator.


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class PendingKdf:
    """A run_kdf whose Deferreds fire only when the test says so."""

    def __init__(self):
        self.calls = []

    def __call__(self, f, *args):
        d = defer.Deferred()
        self.calls.append((f, args, d))
        return d

    def finish(self, index):
        f, args, d = self.calls[index]
        try:
            result = f(*args)
        except Exception as error:  # noqa: BLE001 - handed to the Deferred as it would be by a thread
            d.errback(error)
        else:
            d.callback(result)


def synchronous_kdf(f, *args):
    return defer.maybeDeferred(f, *args)


def authenticator(key=KEY, now=T0 + 1000, run_kdf=synchronous_kdf, **kwargs):
    return Authenticator(key, run_kdf, clock_ms=Clock(now), **kwargs)


def header(key=KEY, nonce=NONCE, timestamp_ms=T0):
    return auth.make_authorization(key, nonce, timestamp_ms)


def test_good_header_is_accepted():
    assert succeeded(authenticator().check(header())) is None


@vector_ids
def test_node_vectors_are_accepted(vector):
    checker = authenticator(key=vector["key"], now=vector["timestamp_ms"] - 59_000)
    succeeded(checker.check(vector["authorization"]))


def test_wrong_key_is_401():
    error = failed(authenticator().check(header(key="w" * 32)), HeadError)
    assert error.status == 401


def test_replayed_header_is_401():
    checker = authenticator()
    succeeded(checker.check(header()))
    assert failed(checker.check(header()), HeadError).status == 401
    succeeded(checker.check(header(nonce="b" + NONCE[1:])))


@pytest.mark.parametrize("value", [None, "", "Basic eDp5", "TPoT-1 garbage"])
def test_missing_or_malformed_header_is_401_without_running_the_kdf(value):
    kdf = PendingKdf()
    assert failed(authenticator(run_kdf=kdf).check(value), HeadError).status == 401
    assert kdf.calls == []


@pytest.mark.parametrize("now", [T0 + WINDOW_MS + 1, T0 - WINDOW_MS - 1])
def test_stale_header_is_401_without_running_the_kdf(now):
    kdf = PendingKdf()
    assert failed(authenticator(now=now, run_kdf=kdf).check(header()), HeadError).status == 401
    assert kdf.calls == []


def test_no_key_configured_accepts_anything():
    checker = authenticator(key=None, run_kdf=PendingKdf())
    for value in (None, "", "garbage", header()):
        assert succeeded(checker.check(value)) is None


def test_the_kdf_runs_through_run_kdf():
    kdf = PendingKdf()
    d = authenticator(run_kdf=kdf).check(header())
    assert not d.called
    [(f, args, _)] = kdf.calls
    assert f is auth.verify_any
    assert args == ((KEY,), auth.parse_authorization(header()))
    kdf.finish(0)
    succeeded(d)


def test_too_many_pending_checks_is_503():
    kdf = PendingKdf()
    checker = authenticator(run_kdf=kdf, max_pending=2)
    first = checker.check(header(nonce="1" + NONCE[1:]))
    second = checker.check(header(nonce="2" + NONCE[1:], key="w" * 32))
    assert failed(checker.check(header(nonce="3" + NONCE[1:])), HeadError).status == 503
    assert len(kdf.calls) == 2
    kdf.finish(1)  # a failure frees its slot too
    assert failed(second, HeadError).status == 401
    third = checker.check(header(nonce="4" + NONCE[1:]))
    assert failed(checker.check(header(nonce="5" + NONCE[1:])), HeadError).status == 503
    kdf.finish(0)
    kdf.finish(2)
    succeeded(first)
    succeeded(third)
    fourth = checker.check(header(nonce="6" + NONCE[1:]))
    assert not fourth.called and len(kdf.calls) == 4


def test_a_header_refused_with_503_is_used_up():
    kdf = PendingKdf()
    checker = authenticator(run_kdf=kdf, max_pending=1)
    checker.check(header(nonce="1" + NONCE[1:]))
    busy = header(nonce="2" + NONCE[1:])
    assert failed(checker.check(busy), HeadError).status == 503
    kdf.finish(0)
    assert failed(checker.check(busy), HeadError).status == 401
    assert len(kdf.calls) == 1


def test_concurrent_checks_of_one_header_accept_only_one():
    kdf = PendingKdf()
    checker = authenticator(run_kdf=kdf)
    first, second = checker.check(header()), checker.check(header())
    # The second is a replay from the moment the first was seen: no KDF run for it.
    assert failed(second, HeadError).status == 401
    assert len(kdf.calls) == 1
    kdf.finish(0)
    succeeded(first)


def test_concurrent_bad_headers_from_one_address_get_five_kdf_runs_then_429():
    kdf = PendingKdf()
    checker = authenticator(run_kdf=kdf, max_pending=100)
    checks = [checker.check(header(nonce=f"{n:02d}" + NONCE[2:], key="w" * 32), "10.0.0.1") for n in range(70)]
    assert len(kdf.calls) == 5
    assert [failed(d, HeadError).status for d in checks[5:]] == [429] * 65
    for index in range(5):
        kdf.finish(index)
    assert [failed(d, HeadError).status for d in checks[:5]] == [401] * 5
    # Another address is not affected, and one that succeeds gives its slot back.
    good = [checker.check(header(nonce=f"g{n}" + NONCE[2:]), "10.0.0.2") for n in range(5)]
    for index in range(5, 10):
        kdf.finish(index)
    assert all(succeeded(d) is None for d in good)
    assert checker.failures.retry_after("10.0.0.2", T0) is None


def test_spend_uses_up_a_header_refused_before_its_check():
    checker = authenticator()
    captured = header()
    checker.spend(captured)
    assert failed(checker.check(captured), HeadError).status == 401
    checker.spend("garbage")  # nothing to use up, nothing raised


# Connections to TCP tunnels: the tunnel's access secret, or the server's key.

SECRET = "s" * 40


def test_verify_any_names_the_first_key_that_made_the_token():
    credentials = auth.parse_authorization(header())
    assert auth.verify_any(("x" * 40, KEY, KEY), credentials) == 1
    with pytest.raises(AuthError):
        auth.verify_any(("x" * 40, "y" * 40), credentials)
    with pytest.raises(AuthError):
        auth.verify_any((), credentials)


def test_access_is_checked_against_secret_and_key_in_one_kdf_job():
    kdf = PendingKdf()
    d = authenticator(run_kdf=kdf).check_access(SECRET, header())
    [(f, args, _)] = kdf.calls
    assert f is auth.verify_any
    assert args == ((SECRET, KEY), auth.parse_authorization(header()))
    kdf.finish(0)
    assert succeeded(d) == "server key"


def test_access_with_the_secret():
    assert succeeded(authenticator().check_access(SECRET, header(key=SECRET))) == "access secret"


def test_access_needs_proof_even_without_a_server_key():
    checker = authenticator(key=None)
    assert failed(checker.check_access(SECRET, None), HeadError).status == 401
    error = failed(checker.check_access(SECRET, header(key="w" * 40)), HeadError)
    assert error.status == 401 and "access secret" in error.reason
    assert succeeded(checker.check_access(SECRET, header(key=SECRET, nonce="9" + NONCE[1:]))) == "access secret"


def test_one_replay_cache_serves_both_checks():
    checker = authenticator()
    succeeded(checker.check(header()))
    assert failed(checker.check_access(SECRET, header()), HeadError).status == 401


def test_access_checks_count_against_the_pending_bound():
    kdf = PendingKdf()
    checker = authenticator(run_kdf=kdf, max_pending=1)
    checker.check(header(nonce="1" + NONCE[1:]))
    assert failed(checker.check_access(SECRET, header(nonce="2" + NONCE[1:])), HeadError).status == 503


# TPoT-Secret: the access secret proved with an HMAC, for /connect-tpot only.


def secret_header(secret=SECRET, name="ssh", nonce=NONCE, timestamp_ms=T0):
    return auth.make_secret_authorization(secret, name, nonce, timestamp_ms)


def test_secret_proof_round_trips_and_is_bound_to_secret_and_name():
    credentials = auth.parse_authorization(secret_header(), (auth.SECRET_SCHEME,))
    assert credentials.scheme == auth.SECRET_SCHEME and credentials.nonce == NONCE
    auth.verify_secret(SECRET, "ssh", credentials)
    for secret, name in ((SECRET + "x", "ssh"), (SECRET, "db")):
        with pytest.raises(AuthError):
            auth.verify_secret(secret, name, credentials)
    with pytest.raises(AuthError):
        auth.parse_authorization(secret_header())  # TPoT-1 only, as /create-tpot reads it


def test_secret_proof_is_checked_without_the_kdf_pool():
    kdf = PendingKdf()
    checker = authenticator(run_kdf=kdf, max_pending=0)
    assert succeeded(checker.check_access(SECRET, secret_header(), name="ssh")) == "access secret"
    assert kdf.calls == []


@pytest.mark.parametrize("proof", [
    secret_header(secret="w" * 40),
    secret_header(name="other"),
    secret_header(timestamp_ms=T0 - 120_000),
    secret_header(secret=KEY),  # the server's key only by TPoT-1
], ids=["wrong-secret", "other-tunnel", "stale", "server-key"])
def test_bad_secret_proofs_are_401(proof):
    assert failed(authenticator().check_access(SECRET, proof, name="ssh"), HeadError).status == 401


def test_secret_proofs_are_not_replayed_and_failures_are_limited():
    checker = authenticator()
    succeeded(checker.check_access(SECRET, secret_header(), name="ssh"))
    assert failed(checker.check_access(SECRET, secret_header(), name="ssh"), HeadError).status == 401
    for attempt in range(4):
        bad = secret_header(secret="w" * 40, nonce=f"{attempt}{NONCE[1:]}")
        failed(checker.check_access(SECRET, bad, name="ssh"), HeadError)
    assert failed(checker.check_access(SECRET, secret_header(nonce="9" + NONCE[1:]), name="ssh"), HeadError).status == 429


def test_a_secret_proof_does_not_open_a_tunnel():
    assert failed(authenticator().check(secret_header(secret=KEY)), HeadError).status == 401


# The replay cache and failure limiter are injected: shared by nodes, or answering later.


@implementer(IReplayCache)
class LaterReplayCache:
    """A replay cache that answers with a Deferred fired by `answer()`, as a shared store would."""

    def __init__(self):
        self.cache = ReplayCache()
        self.pending = []

    def remember(self, credentials, now):
        d = defer.Deferred()
        self.pending.append((d, credentials, now))
        return d

    def answer(self):
        d, credentials, now = self.pending.pop(0)
        try:
            self.cache.remember(credentials, now)
        except AuthError as error:
            d.errback(error)
        else:
            d.callback(None)


@implementer(IFailureLimiter)
class LaterFailureLimiter:
    """A failure limiter whose answers are Deferreds, fired at once here."""

    def __init__(self):
        self.limiter = auth.FailureLimiter()

    def retry_after(self, source, now):
        return defer.succeed(self.limiter.retry_after(source, now))

    def failed(self, source, now):
        self.limiter.failed(source, now)
        return defer.succeed(None)

    def forgive(self, source, since):
        self.limiter.forgive(source, since)
        return defer.succeed(None)


def test_the_replay_cache_and_failure_limiter_provide_their_interfaces():
    assert verifyObject(IReplayCache, ReplayCache())
    assert verifyObject(IFailureLimiter, auth.FailureLimiter())
    assert verifyObject(IReplayCache, LaterReplayCache())
    assert verifyObject(IFailureLimiter, LaterFailureLimiter())


def test_by_default_each_authenticator_has_its_own_cache_and_limiter():
    one, two = authenticator(), authenticator()
    assert isinstance(one.replays, ReplayCache) and isinstance(one.failures, auth.FailureLimiter)
    assert one.replays is not two.replays and one.failures is not two.failures
    succeeded(one.check(header()))
    succeeded(two.check(header()))


def test_a_shared_replay_cache_refuses_a_header_replayed_to_another_node():
    shared = ReplayCache()
    one, two = authenticator(replays=shared), authenticator(replays=shared)
    succeeded(one.check(header()))
    assert failed(two.check(header()), HeadError).status == 401


def test_a_shared_failure_limiter_blocks_a_source_on_every_node():
    shared = auth.FailureLimiter()
    one, two = authenticator(failures=shared), authenticator(failures=shared)
    for _ in range(5):
        assert failed(one.check(header(key="w" * 32), "10.0.0.1"), HeadError).status == 401
    error = failed(two.check(header(), "10.0.0.1"), HeadError)
    assert error.status == 429 and dict(error.headers)["Retry-After"]
    succeeded(two.check(header(nonce="2" + NONCE[1:]), "10.0.0.2"))


def test_an_asynchronous_replay_cache_is_waited_for():
    replays = LaterReplayCache()
    checker = authenticator(replays=replays)
    first = checker.check(header())
    assert not first.called
    replays.answer()
    assert succeeded(first) is None
    again = checker.check(header())
    replays.answer()
    assert failed(again, HeadError).status == 401


def test_an_asynchronous_failure_limiter_counts_and_blocks():
    failures = LaterFailureLimiter()
    checker = authenticator(failures=failures)
    for _ in range(5):
        assert failed(checker.check("garbage", "10.0.0.1"), HeadError).status == 401
    assert failed(checker.check(header(), "10.0.0.1"), HeadError).status == 429
    assert succeeded(checker.check(header(nonce="2" + NONCE[1:]), "10.0.0.2")) is None


def test_new_access_secrets_are_valid_and_never_read_as_an_option():
    secrets = [auth.new_access_secret() for _ in range(5000)]
    assert len(set(secrets)) == len(secrets)
    assert all(auth.valid_access_secret(secret) and not secret.startswith("-") for secret in secrets)
    assert all(len(secret) == 43 for secret in secrets)
