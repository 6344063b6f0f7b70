"""Who may visit the tunnel: `--allow-ip CIDR` and `--basic-auth USER:PASS` (pure).

The client judges every request head of a conversation before anything of it reaches the
target (tpot.http.rewrite.HostRewriter's `on_head`).  A visitor whose address (the one the
server reports for the conversation, after its own --trusted-proxy handling; never a
header the visitor sent) is in none of the allowed ranges gets 403, a request without the
right Basic credentials 401 with `WWW-Authenticate: Basic realm="tpot"`, and where a head
cannot be read at all while credentials are required, 400.  The client answers these
itself with `Connection: close` and ends the conversation.  An admitted request is
forwarded without its Authorization header: the credentials are the tunnel's, not the
target's.
"""

import base64
import binascii
import hashlib
import hmac

from tpot.http.addresses import address_in, parse_networks
from tpot.http.responses import error_response

REALM = "tpot"
BAD_REQUEST, UNAUTHORIZED, FORBIDDEN = 400, 401, 403

_MESSAGES = {
    BAD_REQUEST: "The request could not be read.",
    UNAUTHORIZED: "This tunnel needs a user name and password.",
    FORBIDDEN: "Your address may not visit this tunnel.",
}
_CHALLENGE = (("WWW-Authenticate", f'Basic realm="{REALM}"'),)


def parse_credentials(text, option="--basic-auth"):
    """`USER:PASS` (the password may hold colons) checked; ValueError says what is wrong."""
    user, colon, password = (text or "").partition(":")
    if not colon or not user or not password:
        raise ValueError(f"{option} needs USER:PASS with a non-empty user and password, e.g. {option} alice:s3cret")
    return text


def parse_allowed(cidrs):
    """--allow-ip values to networks; ValueError names the one that is not valid."""
    return parse_networks(cidrs, option="--allow-ip")


def refusal_response(status, head_only=False):
    """The client's own answer with `status`; `head_only` for a HEAD request (no body)."""
    response = error_response(status, _MESSAGES[status], _CHALLENGE if status == UNAUTHORIZED else ())
    if head_only:
        return response[: response.index(b"\r\n\r\n") + 4]
    return response


def _digest(credentials):
    # Hashing first makes the comparison's time independent of the lengths too.
    return hashlib.sha256(credentials).digest()


class VisitorPolicy:
    """`credentials`: "USER:PASS" or None; `networks`: the allowed ranges (none: anyone)."""

    def __init__(self, credentials=None, networks=()):
        self._expected = _digest(credentials.encode("utf-8")) if credentials else None
        self.networks = tuple(networks)

    def allows_address(self, address):
        return not self.networks or address_in(address or "", self.networks)

    def judges(self, address_allowed):
        """Whether a conversation's requests need judging (otherwise they all pass)."""
        return not address_allowed or self._expected is not None

    def judge(self, lines, address_allowed):
        """(None, the head's lines to forward) or (status, None) for a request to refuse.

        `lines`: a request head's lines, start line first; None where a head could not be read.
        """
        if not address_allowed:
            return FORBIDDEN, None
        if lines is None:
            return (BAD_REQUEST, None) if self._expected is not None else (None, None)
        if self._expected is None:
            return None, lines
        kept = [lines[0]]
        offered = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() == b"authorization":
                offered.append(value.strip())
            else:
                kept.append(line)
        if len(offered) != 1 or not self._matches(offered[0]):
            return UNAUTHORIZED, None
        return None, kept

    def _matches(self, authorization):
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            credentials = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(_digest(credentials), self._expected)
