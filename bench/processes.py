"""The processes one run starts (each in its own session, all stopped at the end), and
where the programs it runs are."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import REPO, BenchError, log
from tests.support.processes import start_process, stop_process


class Processes:
    """Every process this run starts; each logs to a file, all are stopped at the end."""

    def __init__(self):
        self.running = []

    def start(self, args, log_path, cwd, env=None):
        logf = open(log_path, "wb")
        proc = start_process(args, cwd, env, logf, stdin=subprocess.DEVNULL, new_session=True)
        proc.log_file = logf
        proc.log_path = log_path
        self.running.append(proc)
        return proc

    def stop(self, proc):
        stop_process(proc)
        proc.log_file.close()
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self.running)):
            try:
                self.stop(proc)
            except Exception as error:  # keep stopping the others
                log(f"could not stop process {proc.pid}: {error}")


def find_tool(name, extra=()):
    path = shutil.which(name)
    if path:
        return path
    for candidate in extra:
        if os.access(candidate, os.X_OK):
            return candidate
    raise BenchError(f"{name} is not installed; run `make bench`, which installs it with apt-get.")


def nginx_bin():
    return find_tool("nginx", ["/usr/sbin/nginx"])


def venv_bin():
    for directory in (Path(sys.executable).parent, REPO / ".venv" / "bin"):
        if (directory / "twistd").exists() and (directory / "tpot").exists():
            return directory
    raise BenchError("twistd and tpot are not in the virtualenv; run `make venv` first.")
