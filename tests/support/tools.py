"""External programs some tests run (nginx, systemd-analyze, haproxy): found, or the test is skipped.

`make test` installs them with apt-get when they are missing, so a skip means a machine
where they cannot be installed (no apt-get, not root).  With CI=true a skip is a failure
(tests/conftest.py): CI must run every test.
"""

import os
import shutil

import pytest

# Where Debian puts programs that a non-root PATH may lack.
SYSTEM_DIRECTORIES = ("/usr/sbin", "/sbin", "/usr/bin")


def find_tool(name):
    """The path of the program `name`, or None."""
    found = shutil.which(name)
    if found:
        return found
    for directory in SYSTEM_DIRECTORIES:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_tool(name, package):
    """The path of `name`; the test is skipped (failed under CI) if it is not installed."""
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {package}; `make test` does it)")
    return path
