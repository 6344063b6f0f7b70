"""Tunnel names: which are valid (a DNS label of ours), and random ones.

Pure; both ends use it: the server to check and hand out names, the client to check -s.
"""

import re
import secrets
import string

# A DNS label of ours: 1-24 of a-z, 0-9 and '-', starting and ending with a letter or digit.
NAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,22}[a-z0-9])?")
NAME_RULE = "use 1-24 of a-z, 0-9 and '-', not starting or ending with '-'"
RANDOM_NAME_LENGTH = 8
_BASE36 = string.digits + string.ascii_lowercase
# Names that look like the server's own (or a mail or DNS service of the domain): a tunnel
# holding one could pass for the operator.  The server's --reserved-names replaces the list.
RESERVED_NAMES = frozenset({
    "www", "api", "admin", "administrator", "root", "localhost", "tpot", "create-tpot", "connect-tpot",
    "healthz", "metrics", "status", "dashboard", "console", "login", "auth", "account", "accounts",
    "mail", "email", "smtp", "imap", "pop", "pop3", "webmail", "mx", "ns", "ns1", "ns2", "dns",
    "ftp", "autoconfig", "autodiscover", "wpad", "isatap",
})


def name_problem(name):
    """Why `name` cannot be a tunnel's name (one clause), or None if it can."""
    if NAME_PATTERN.fullmatch(name) is None:
        return NAME_RULE
    if name[2:4] == "--":
        # RFC 5891, 4.2.3.1: such labels are reserved; xn-- ones decode to look-alike
        # Unicode names (IDN spoofing).
        return "names with '--' in the third and fourth places (such as xn--) are reserved for IDNs"
    return None


def valid_name(name):
    return name_problem(name) is None


def random_name():
    return "".join(secrets.choice(_BASE36) for _ in range(RANDOM_NAME_LENGTH))
