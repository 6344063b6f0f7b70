"""A real redis-server on a free loopback port, for the tests of what runs on Redis.

`make test` installs Debian's redis-server when it is missing (tests/support/tools.py).
Nothing is saved to disk; the server goes with the process that started it.
"""

import subprocess

from tests.support.processes import pick_free_port, start_process, stop_process, wait_for_port
from tests.support.tools import require_tool


class RedisServer:
    def __init__(self, directory):
        self.port = pick_free_port()
        self.directory = directory
        self.log_path = directory / "redis.log"
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        binary = require_tool("redis-server", "redis-server")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.directory), "--logfile", str(self.log_path)]
        self.proc = start_process(args, self.directory, None, subprocess.DEVNULL)
        if not wait_for_port(self.port, self.proc):
            raise RuntimeError(f"redis-server did not start: {self.log()}")
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"
