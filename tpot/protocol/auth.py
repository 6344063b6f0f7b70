"""The TPoT-1 Authorization scheme: building the header, checking it, refusing replays.

Pure functions; the server runs `derive_token` (32768 PBKDF2 rounds) in a thread pool.
TPoT-Secret, for connections to a TCP tunnel, has the same shape with an HMAC in place of
the KDF: its key is the tunnel's random access secret, which needs no stretching, so a
proof costs microseconds instead of ~45 ms of CPU on each side per connection.
"""

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from dataclasses import dataclass

SCHEME = "TPoT-1"
SECRET_SCHEME = "TPoT-Secret"
ITERATIONS = 32768
TOKEN_LENGTH = 128
WINDOW_MS = 60_000
MIN_KEY_LENGTH = 32
# A TCP tunnel's access secret (docs/PROTOCOL.md, `tcp`): long enough to guess as hard as a
# key, short enough for a header, printable without spaces so it survives copy and paste.
MIN_SECRET_LENGTH = 32
MAX_SECRET_LENGTH = 256


class AuthError(Exception):
    """The header does not authorise this request; the reason is for logs, not the peer."""


@dataclass(frozen=True)
class Credentials:
    nonce: str
    timestamp_ms: int
    token: bytes
    scheme: str = SCHEME


def now_ms():
    return int(time.time() * 1000)


def valid_access_secret(secret):
    return (
        isinstance(secret, str)
        and MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH
        and all("!" <= char <= "~" for char in secret)
    )


def new_access_secret():
    """43 random base64url characters (258 bits), never starting with '-', which would read
    as an option in the printed `tpot connect ... --secret SECRET` (one secret in 64 did)."""
    return base64.urlsafe_b64encode(os.urandom(36)).decode("ascii").lstrip("-")[:43]


def derive_token(key, nonce, timestamp_ms):
    salt = hashlib.md5(f"{nonce}\n{timestamp_ms}".encode("ascii")).hexdigest()
    return hashlib.pbkdf2_hmac(
        "sha256", key.encode("utf-8"), salt.encode("ascii"), ITERATIONS, TOKEN_LENGTH
    )


def secret_token(secret, name, nonce, timestamp_ms):
    """TPoT-Secret's token: an HMAC bound to the tunnel's name, the nonce and the time."""
    message = f"{SECRET_SCHEME}\n{name}\n{nonce}\n{timestamp_ms}".encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def make_authorization(key, nonce=None, timestamp_ms=None):
    """The header value a client sends; nonce and time are injectable for test vectors."""
    return _header(SCHEME, lambda n, t: derive_token(key, n, t), nonce, timestamp_ms)


def make_secret_authorization(secret, name, nonce=None, timestamp_ms=None):
    """The TPoT-Secret header value proving a TCP tunnel's access secret for `name`."""
    return _header(SECRET_SCHEME, lambda n, t: secret_token(secret, name, n, t), nonce, timestamp_ms)


def _header(scheme, token_for, nonce, timestamp_ms):
    if nonce is None:
        nonce = base64.b64encode(os.urandom(32)).decode("ascii")
    if timestamp_ms is None:
        timestamp_ms = now_ms()
    token = base64.b64encode(token_for(nonce, timestamp_ms)).decode("ascii")
    inner = f"{nonce}\n{timestamp_ms}\n{token}".encode("ascii")
    return f"{scheme} {base64.b64encode(inner).decode('ascii')}"


def parse_authorization(value, schemes=(SCHEME,)):
    """Split a header value of one of `schemes` into Credentials, or raise AuthError."""
    scheme, _, encoded = (value or "").strip().partition(" ")
    if scheme not in schemes:
        raise AuthError(f"missing Authorization header, or not {' or '.join(schemes)}")
    try:
        inner = base64.b64decode(encoded.strip(), validate=True).decode("ascii")
        nonce, timestamp, token = inner.split("\n")
        timestamp_ms = int(timestamp)
        token_bytes = base64.b64decode(token, validate=True)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise AuthError(f"malformed {scheme} Authorization header") from None
    if not nonce or not timestamp.isdigit():
        raise AuthError(f"malformed {scheme} Authorization header")
    return Credentials(nonce, timestamp_ms, token_bytes, scheme)


def check_fresh(credentials, now):
    if abs(now - credentials.timestamp_ms) > WINDOW_MS:
        raise AuthError("timestamp outside the 60 s window")


def verify_token(key, credentials):
    """The expensive part; constant-time comparison of the derived token."""
    verify_any((key,), credentials)


def verify_any(keys, credentials):
    """The index of the first of `keys` that made the token; AuthError if none did.

    One call (one job for the server's KDF pool) whatever the number of keys: a connection
    to a TCP tunnel may prove the tunnel's access secret or the server's key.
    """
    for index, key in enumerate(keys):
        expected = derive_token(key, credentials.nonce, credentials.timestamp_ms)
        if hmac.compare_digest(expected, credentials.token):
            return index
    raise AuthError("token matches no key it may prove")


def verify_secret(secret, name, credentials):
    """Constant-time check of a TPoT-Secret token; AuthError if it does not match."""
    expected = secret_token(secret, name, credentials.nonce, credentials.timestamp_ms)
    if not hmac.compare_digest(expected, credentials.token):
        raise AuthError("token does not prove the tunnel's access secret")


class ReplayCache:
    """Nonces accepted within the window, bounded in count and in time.

    A header is valid for WINDOW_MS either side of its timestamp, so a nonce must be
    remembered until then; beyond `max_entries` the oldest are forgotten first, and
    since those are also the ones closest to expiry that costs the least protection.
    """

    def __init__(self, max_entries=100_000):
        self.max_entries = max_entries
        self._expiry = OrderedDict()

    def __len__(self):
        return len(self._expiry)

    def remember(self, credentials, now):
        """Record a nonce; raise AuthError if it was seen and has not expired."""
        self._forget_expired(now)
        if credentials.nonce in self._expiry:
            raise AuthError("replayed Authorization header")
        self._expiry[credentials.nonce] = credentials.timestamp_ms + WINDOW_MS
        while len(self._expiry) > self.max_entries:
            self._expiry.popitem(last=False)

    def _forget_expired(self, now):
        # Insertion order is close to expiry order; stop at the first live entry.
        while self._expiry:
            nonce, expiry = next(iter(self._expiry.items()))
            if expiry >= now:
                break
            del self._expiry[nonce]


class FailureLimiter:
    """Failed attempts per source address, in fixed windows, bounded in memory.

    After `max_failures` failures within `window_ms`, `retry_after(source, now)` gives the
    seconds until the window ends; until then the source is refused without a KDF run.
    """

    def __init__(self, max_failures=5, window_ms=60_000, max_sources=10_000):
        self.max_failures = max_failures
        self.window_ms = window_ms
        self.max_sources = max_sources
        self._windows = OrderedDict()  # source -> [window start, failures]

    def __len__(self):
        return len(self._windows)

    def retry_after(self, source, now):
        """Seconds to wait if `source` is blocked, else None."""
        window = self._windows.get(source)
        if window is None or now - window[0] >= self.window_ms:
            return None
        if window[1] < self.max_failures:
            return None
        return max(1, -(-(window[0] + self.window_ms - now) // 1000))

    def forgive(self, source, since):
        """Take back one failure counted at `since` (an attempt that succeeded after all)."""
        window = self._windows.get(source)
        if window is not None and window[1] > 0 and since - window[0] < self.window_ms:
            window[1] -= 1

    def failed(self, source, now):
        window = self._windows.get(source)
        if window is None or now - window[0] >= self.window_ms:
            window = self._windows[source] = [now, 0]
        window[1] += 1
        self._windows.move_to_end(source)
        while len(self._windows) > self.max_sources:
            self._windows.popitem(last=False)
