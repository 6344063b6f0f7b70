"""The reclaim tokens of named tunnels, kept in ~/.tpot/names/ so that the same user's next
run gets its name back at once after a crash or kill -9.

A server keeps a dropped tunnel's name for its client for a minute, and gives it back to
whoever presents the tunnel's reclaim token.  The token is as good as the name for that
minute, so it is kept where only this user can read it: the folder is 0700, each file 0600,
written whole (a temporary file renamed over the old one), one per server and name.
Keeping is best effort: a tunnel never fails for a token that cannot be written or read.
"""

import hashlib
import os
import re
import tempfile

TOKENS_PATH = os.path.join("~", ".tpot", "names")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


class ReclaimTokens:
    def __init__(self, folder=TOKENS_PATH):
        self.folder = os.path.expanduser(folder)

    def _path(self, server, name):
        where = f"{server.scheme}://{server.host_with_port}/{name}"
        return os.path.join(self.folder, f"{name}-{hashlib.sha256(where.encode()).hexdigest()[:16]}")

    def load(self, server, name):
        """The token kept for `name` on `server`, or None."""
        try:
            descriptor = os.open(self._path(server, name), os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(descriptor, encoding="ascii") as handle:
                token = handle.read(200).strip()
        except (OSError, ValueError):
            return None
        return token if _TOKEN.fullmatch(token) else None

    def save(self, server, name, token):
        """Keep `token` for `name` on `server`; False when it could not be written."""
        if not _TOKEN.fullmatch(token or ""):
            return False
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            os.chmod(self.folder, 0o700)
            descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=".token-")  # mode 0600
        except OSError:
            return False
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(token + "\n")
            os.replace(temporary, self._path(server, name))
        except OSError:
            self._remove(temporary)  # no half-written token left behind
            return False
        return True

    def forget(self, server, name):
        self._remove(self._path(server, name))

    @staticmethod
    def _remove(path):
        try:
            os.unlink(path)
        except OSError:
            pass
