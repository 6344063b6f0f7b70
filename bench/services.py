"""The processes measured: nginx (the HTTP target), our twistd server with a `tpot http`
client, or with `tpot tcp` and `tpot connect --listen`, and the raw TCP service."""

import os
import re
import sys
import time
from pathlib import Path

from bench.common import BULK_SIZE, DOMAIN, HOST, MEDIUM_SIZE, SMALL_BODY, START_TIMEOUT, TARGETS, BenchError, tail
from bench.logscan import unexpected_tail
from bench.processes import nginx_bin
from bench.procfs import children
from tests.support.processes import clean_env, pick_free_port, wait_for_port

TUNNEL_NAME = "bench"
TCP_TUNNEL_NAME = "benchtcp"


def wait_for_line(proc, pattern, what, timeout=START_TIMEOUT):
    """The first group of `pattern` (a line of proc's log), or BenchError saying `what` went wrong."""
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = regex.search(Path(proc.log_path).read_text(errors="replace"))
        if match:
            return match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise BenchError(f"{what}: {tail(proc.log_path)}")


def start_listening(processes, args, port, log_path, cwd, env, what):
    """Start a process that should listen on `port`; BenchError with its log if it does not."""
    proc = processes.start(args, log_path, cwd, env)
    if not wait_for_port(port, proc, START_TIMEOUT):
        raise BenchError(f"{what} did not start: {tail(log_path)}")
    return proc


def write_www(tmp):
    """nginx's files: a 6-byte page, 100 KB, 1 MiB and 16 MB of random bytes, and an upload folder."""
    www, upload = tmp / "www", tmp / "upload"
    www.mkdir()
    upload.mkdir()
    (www / "small").write_bytes(SMALL_BODY)
    (www / "100k").write_bytes(os.urandom(MEDIUM_SIZE))
    (www / "16m").write_bytes(os.urandom(BULK_SIZE))
    (www / "1m").write_bytes(os.urandom(1024 * 1024))  # the inspector's largest kept body
    # Workers started by root run as an unprivileged user: let them read and write here.
    tmp.chmod(0o755)
    www.chmod(0o755)
    for f in www.iterdir():
        f.chmod(0o644)
    upload.chmod(0o777)
    return www / "16m"


class Nginx:
    def __init__(self, processes, tmp, nofile):
        self.port = pick_free_port()
        self.bulk_file = write_www(tmp)
        conf = tmp / "nginx.conf"
        conf.write_text((TARGETS / "nginx.conf").read_text().format(
            tmp=tmp, host=HOST, port=self.port, nofile=nofile, connections=max(1024, nofile // 2 - 16)
        ))
        args = [nginx_bin(), "-e", tmp / "nginx-error.log", "-p", tmp, "-c", conf]
        self.proc = processes.start(args, tmp / "nginx.out", tmp)
        if not wait_for_port(self.port, self.proc, START_TIMEOUT):
            raise BenchError(f"nginx did not start: {tail(tmp / 'nginx-error.log')} {tail(tmp / 'nginx.out')}")

    def url(self, path):
        return f"http://{HOST}:{self.port}{path}"

    def pids(self):
        return [self.proc.pid, *children(self.proc.pid)]


def start_service(processes, tmp, block_path):
    """The raw TCP source/sink/echo service (bench/targets/echo_service.py); (process, port)."""
    port = pick_free_port()
    args = [sys.executable, TARGETS / "echo_service.py", port, block_path]
    proc = start_listening(processes, args, port, tmp / "tcp-service.log", tmp, clean_env(tmp),
                           "the raw TCP service")
    return proc, port


class TunnelEnds:
    """A server and a client exposing nginx through it, as the load sees them: where to send
    requests (`url`, `host_header`), their processes, their logs; subclasses start them."""

    def __init__(self, processes, tmp, label):
        self.processes = processes
        self.dir = tmp / label
        self.dir.mkdir()
        self.port = pick_free_port()
        self.server = None
        self.client = None
        self.name = None

    @property
    def host(self):
        return f"{self.name}.{DOMAIN}:{self.port}"

    @property
    def host_header(self):
        return f"Host: {self.host}"

    def url(self, path):
        return f"http://{HOST}:{self.port}{path}"

    def log_processes(self):
        """(what, process) of everything this tunnel started, for scan_logs."""
        return (("server", self.server), ("client", self.client))

    def check_alive(self):
        for what, proc in self.log_processes():
            if proc is not None and proc.poll() is not None:
                raise BenchError(f"the tpot {what} exited with status {proc.returncode}: "
                                 f"{unexpected_tail(proc.log_path, 3)}")

    def stop(self):
        for _, proc in reversed(self.log_processes()):
            if proc is not None:
                self.processes.stop(proc)


class Tunnel(TunnelEnds):
    """Our twistd server (with `server_args`, e.g. a cluster's), and optionally a `tpot http`
    client exposing nginx through it."""

    def __init__(self, processes, tmp, bin_dir, label, server_args=()):
        super().__init__(processes, tmp, label)
        self.bin = bin_dir
        self.server = start_listening(
            processes, [bin_dir / "twistd", "-n", "--pidfile=", "tpot", "--domain", DOMAIN,
                        "--listen", f"tcp:{self.port}:interface={HOST}", *server_args],
            self.port, self.dir / "server.log", self.dir, clean_env(self.dir), "the tpot server",
        )

    @property
    def server_url(self):
        return f"http://{DOMAIN}:{self.port}"

    def start_tpot(self, args, log_name, env=None):
        return self.processes.start([self.bin / "tpot", *args], self.dir / log_name, self.dir,
                                    env or clean_env(self.dir))

    def connect_client(self, target_port, request_log=False, name=TUNNEL_NAME, max_conversations=None, server=None,
                       inspect=False):
        """A `tpot http` to nginx; with `inspect`, its inspector on a free port (`inspector_url`)."""
        self.name = name
        # --quiet: measure the tunnel, not a console line per request (BENCH_REQUEST_LOG=1 includes it);
        # --no-inspect unless asked: the inspector has its own figures (bench/scenarios/inspector.py).
        cap = ["--max-conversations", str(max_conversations)] if max_conversations else []
        inspector = ["--inspect", f"{HOST}:0"] if inspect else ["--no-inspect"]
        self.client = self.start_tpot(["http", f"{HOST}:{target_port}", "-t", server or self.server_url, "-s", name,
                                       *([] if request_log else ["--quiet"]), *cap, *inspector], "client.log")
        wait_for_line(self.client, rf"^(http://{re.escape(name)}\.{re.escape(DOMAIN)}\S*)$",
                      "the tpot client did not connect")
        if inspect:
            self.inspector_url = wait_for_line(self.client, r"^inspector: (\S+)$", "the client printed no inspector")

    def server_pids(self):
        """The server's process and its workers (--workers)."""
        return [self.server.pid, *children(self.server.pid)]


class TcpTunnel(Tunnel):
    """Our server, a `tpot tcp` client exposing a TCP service, and `tpot connect --listen` reaching it."""

    def __init__(self, processes, tmp, bin_dir, label):
        super().__init__(processes, tmp, bin_dir, label)
        self.connector = None
        self.listen_port = None

    def connect_tcp(self, target_port, name=TCP_TUNNEL_NAME):
        self.name = name
        self.client = self.start_tpot(["tcp", f"{HOST}:{target_port}", "-t", self.server_url, "-s", name, "-q"],
                                      "tcp-client.log")
        secret = wait_for_line(self.client, r"^access secret: (\S+)$", "the tpot tcp client did not connect")
        env = clean_env(self.dir)
        env["TPOT_ACCESS_SECRET"] = secret  # as --secret, but out of the process list
        self.connector = self.start_tpot(["connect", name, "-t", self.server_url, "--listen", f"{HOST}:0"],
                                         "connect-client.log", env)
        self.listen_port = int(wait_for_line(
            self.connector, rf"^tpot listening on {re.escape(HOST)}:(\d+)$", "tpot connect did not start listening"))

    def log_processes(self):
        return (("server", self.server), ("tcp client", self.client), ("connect client", self.connector))
