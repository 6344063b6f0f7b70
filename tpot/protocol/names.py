"""Tunnel names: which are valid (a DNS label of ours), and random ones.

Pure; both ends use it: the server to check and hand out names, the client to check -s.
"""

import re
import secrets
import string

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,23}")
RANDOM_NAME_LENGTH = 8
_BASE36 = string.digits + string.ascii_lowercase


def valid_name(name):
    return NAME_PATTERN.fullmatch(name) is not None


def random_name():
    return "".join(secrets.choice(_BASE36) for _ in range(RANDOM_NAME_LENGTH))
