"""The reference Node.js pair (signal24/tpot-server and tpot-client v0.2.0, fetched and
npm-installed by the user into BENCH_REFERENCE): where it is, and its server and client
exposing nginx, on loopback, as our Tunnel does.

That client takes a conversation id as a signed 16-bit number and exits at the 32,768th
visitor connection, so the side-by-side (bench/scenarios/reference.py) starts it afresh,
under a new tunnel name, before each of its figures.
"""

import re
import shutil
from pathlib import Path

from bench.common import DOMAIN, HOST, TARGETS, BenchError
from bench.processes import find_tool
from bench.services import TunnelEnds, start_listening, wait_for_line
from tests.support.processes import clean_env

PARTS = ("tpot-server", "tpot-client")
# Where the client stops working (see above); a figure that opens more is flagged.
CONVERSATION_LIMIT = 32_768


def check_reference(directory):
    """The reference checkout's folder, or BenchError saying what is missing, in one sentence."""
    root = Path(directory).expanduser().resolve()
    for part in PARTS:
        if not (root / part / "index.js").exists() or not (root / part / "node_modules").is_dir():
            raise BenchError(f"BENCH_REFERENCE={directory} has no npm-installed {part}/ (fetch signal24/{part} at "
                             f"v0.2.0 into it and run npm install there; README, Performance).")
    if shutil.which("node") is None:
        raise BenchError("node is not on PATH, and the reference pair (BENCH_REFERENCE) needs it.")
    return root


class ReferenceTunnel(TunnelEnds):
    """The reference server (DOMAIN=localhost, on 127.0.0.1) and its client exposing nginx."""

    def __init__(self, processes, tmp, root, label):
        super().__init__(processes, tmp, label)
        self.root = root
        self.node = find_tool("node")
        self.started = 0  # clients started so far: each gets a name of its own
        env = {**clean_env(self.dir), "DOMAIN": DOMAIN, "PORT": str(self.port)}
        self.server = start_listening(
            processes, [self.node, "--require", TARGETS / "loopback.js", root / "tpot-server" / "index.js"],
            self.port, self.dir / "server.log", self.dir, env, "the reference server")

    def connect_client(self, target_port):
        """A fresh reference client exposing nginx under a new name (the previous one stopped)."""
        if self.client is not None:
            self.processes.stop(self.client)
        self.started += 1
        self.name = f"ref{self.started}"
        args = [self.node, self.root / "tpot-client" / "index.js", "http", f"{HOST}:{target_port}",
                "-t", f"{DOMAIN}:{self.port}", "-s", self.name]
        self.client = self.processes.start(args, self.dir / f"client-{self.started}.log", self.dir,
                                           clean_env(self.dir))
        wait_for_line(self.client, rf"^(http://{re.escape(self.name)}\.{re.escape(DOMAIN)}\S*)$",
                      "the reference client did not connect")

    def check_alive(self):
        """The server only: a client that exited is recorded with its figure, then replaced."""
        if self.server.poll() is not None:
            raise BenchError(f"the reference server exited with status {self.server.returncode}")
