#!/usr/bin/env python3
"""`make bench`: TPoT measured against the same load sent straight at nginx.

Everything runs on 127.0.0.1: nginx (generated config, temporary directory) serves a
6-byte page, a 100 KB file and a 16 MB file and accepts 16 MB uploads (WebDAV PUT, so the
whole body is received before nginx answers); our twistd server and a `tpot http` client
expose it as a tunnel. Each scenario is run directly and through the tunnel, alternately,
BENCH_REPEAT times (default 3) for BENCH_DURATION seconds (default 10); each figure is the
median with min-max. Then two memory measurements on fresh servers: RSS with
BENCH_TUNNELS (1000) idle tunnels, and with BENCH_VISITORS (5000) idle visitor connections.

Prints one table on stdout (progress goes to stderr) and writes the same as JSON to
bench/results/<UTC timestamp>.json. Nothing here asserts timings: a person judges.

BENCH_BULK_COUNT (4) is the number of 16 MB transfers per bulk figure; BENCH_KEEP_TMP=1
keeps the temporary directory (nginx, server and client logs).

Raw TCP tunnels get their own rows: a small source/sink/echo service (a separate Python
process on 127.0.0.1) exposed with `tpot tcp` and reached through `tpot connect --listen`,
against the same service reached directly. Per round: one stream uploading BENCH_TCP_MB
(64) MB to the sink, one downloading as much from the source (each timed from the first
byte sent to the last byte checked: count and sha256), and BENCH_TCP_CONNECTIONS (50)
sequential short connections (connect, send 1 KB, read its echo, close). BENCH_TCP=0 skips
this part, BENCH_TCP=only runs nothing else (no nginx or wrk needed). A failure here is one
line in the report, and the other figures are kept.

Needs wrk, nginx and curl on PATH (the Makefile target installs them), and the project's
virtualenv (twistd and tpot next to this interpreter, or in .venv/bin).
"""

import base64
import hashlib
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
HOST = "127.0.0.1"
DOMAIN = "localhost"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
SMALL_BODY = b"hello\n"  # 6 bytes
MEDIUM_SIZE = 100 * 1024
BULK_SIZE = 16 * 1024 * 1024
TUNNEL_NAME = "bench"
TCP_TUNNEL_NAME = "benchtcp"
TCP_BLOCK_SIZE = 1024 * 1024  # the source sends (and the upload sends) this random block over and over
TCP_CHUNK = 256 * 1024
TCP_ECHO_SIZE = 1024
TCP_IO_TIMEOUT = 30.0  # any one socket operation of the raw TCP measurements
TCP_ROUND_LIMIT = 120.0  # seconds any one raw TCP figure may take
# Settings that must not leak into the processes under test from the outer environment.
LEAKY = ("DOMAIN", "AUTH_KEY", "PORT", "TPOT_SERVER", "TPOT_AUTH_KEY", "TPOT_ACCESS_SECRET")


class BenchError(Exception):
    """Something the benchmark cannot continue after; one sentence for the user."""


def env_int(name, default, minimum=1, maximum=100000):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BenchError(f"{name} must be a whole number, not {raw!r}.") from None
    if not minimum <= value <= maximum:
        raise BenchError(f"{name} must be between {minimum} and {maximum}.")
    return value


def log(message):
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit; children (nginx, twistd, tpot, wrk) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def find_tool(name, extra=()):
    path = shutil.which(name)
    if path:
        return path
    for candidate in extra:
        if os.access(candidate, os.X_OK):
            return candidate
    raise BenchError(f"{name} is not installed; run `make bench`, which installs it with apt-get.")


def venv_bin():
    for directory in (Path(sys.executable).parent, REPO / ".venv" / "bin"):
        if (directory / "twistd").exists() and (directory / "tpot").exists():
            return directory
    raise BenchError("twistd and tpot are not in the virtualenv; run `make venv` first.")


# ---------------------------------------------------------------------------------------
# /proc readings


def cpu_seconds(pid):
    """utime + stime of one process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        stat = f.read()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                    found.append(int(entry))
        return found


def machine_info(tools=True):
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = None
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass

    def version(args):
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return None

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mb": mem_kb // 1024 if mem_kb else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": version([find_tool("nginx", ["/usr/sbin/nginx"]), "-v"]) if tools else None,
        "wrk": version([find_tool("wrk"), "-v"]) if tools else None,
        "curl": version([find_tool("curl"), "--version"]) if tools else None,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


# ---------------------------------------------------------------------------------------
# processes


class Processes:
    """Every process this run starts, each in its own session; all stopped at the end."""

    def __init__(self):
        self.running = []

    def start(self, args, log_path, cwd, env=None):
        logf = open(log_path, "wb")
        proc = subprocess.Popen(
            args, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.log_file = logf
        proc.log_path = log_path
        self.running.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # Still unreaped, so its process group (its session) is ours: kill it whole.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(STOP_TIMEOUT)
        proc.log_file.close()
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self.running)):
            try:
                self.stop(proc)
            except Exception as error:  # keep stopping the others
                log(f"could not stop process {proc.pid}: {error}")


def clean_env(home):
    env = {k: v for k, v in os.environ.items() if k not in LEAKY}
    env["PYTHONUNBUFFERED"] = "1"
    env["HOME"] = str(home)  # no ~/.tpot/config.json from the real home
    return env


NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections {connections}; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    server {{
        listen {host}:{port} backlog=4096;
        root {tmp}/www;
        location /upload/ {{
            root {tmp};
            client_max_body_size 32m;
            client_body_buffer_size 1m;
            dav_methods PUT;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, processes, tmp, nofile):
        self.processes = processes
        self.tmp = tmp
        self.port = free_port()
        www = tmp / "www"
        www.mkdir()
        (www / "small").write_bytes(SMALL_BODY)
        (www / "100k").write_bytes(os.urandom(MEDIUM_SIZE))
        (www / "16m").write_bytes(os.urandom(BULK_SIZE))
        self.bulk_file = www / "16m"
        upload = tmp / "upload"
        upload.mkdir()
        # Workers started by root run as an unprivileged user: let them read and write here.
        tmp.chmod(0o755)
        www.chmod(0o755)
        for f in www.iterdir():
            f.chmod(0o644)
        upload.chmod(0o777)
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            tmp=tmp, host=HOST, port=self.port, nofile=nofile, connections=max(1024, nofile // 2 - 16)
        ))
        nginx = find_tool("nginx", ["/usr/sbin/nginx"])
        self.proc = processes.start([nginx, "-e", str(tmp / "nginx-error.log"), "-p", str(tmp), "-c", str(conf)],
                                    tmp / "nginx.out", tmp)
        if not wait_for_port(self.port, self.proc):
            raise BenchError(f"nginx did not start: {tail(tmp / 'nginx-error.log')} {tail(tmp / 'nginx.out')}")

    def url(self, path):
        return f"http://{HOST}:{self.port}{path}"

    def pids(self):
        return [self.proc.pid, *children(self.proc.pid)]


class Tunnel:
    """Our twistd server, and optionally a `tpot http` client exposing nginx through it."""

    def __init__(self, processes, tmp, bin_dir, label):
        self.processes = processes
        self.dir = tmp / label
        self.dir.mkdir()
        self.bin = bin_dir
        self.port = free_port()
        self.client = None
        self.server = processes.start(
            [str(bin_dir / "twistd"), "-n", "--pidfile=", "tpot", "--domain", DOMAIN,
             "--listen", f"tcp:{self.port}:interface={HOST}"],
            self.dir / "server.log", self.dir, clean_env(self.dir),
        )
        if not wait_for_port(self.port, self.server):
            raise BenchError(f"the tpot server did not start: {tail(self.dir / 'server.log')}")

    def connect_client(self, target_port, name=TUNNEL_NAME):
        self.name = name
        self.client = self.processes.start(
            [str(self.bin / "tpot"), "http", f"{HOST}:{target_port}", "-t", f"http://{DOMAIN}:{self.port}",
             # --quiet: measure the tunnel, not a console line per request (set BENCH_REQUEST_LOG=1 to include it)
             "-s", name, *([] if os.environ.get("BENCH_REQUEST_LOG") == "1" else ["--quiet"])],
            self.dir / "client.log", self.dir, clean_env(self.dir),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = (self.dir / "client.log").read_text(errors="replace")
            if "tpot connected" in text and f"{name}.{DOMAIN}" in text:
                return
            if self.client.poll() is not None:
                break
            time.sleep(0.05)
        raise BenchError(f"the tpot client did not connect: {tail(self.dir / 'client.log')}")

    @property
    def host_header(self):
        return f"Host: {self.name}.{DOMAIN}:{self.port}"

    def url(self, path):
        return f"http://{HOST}:{self.port}{path}"

    def log_processes(self):
        """(what, process) of everything this tunnel started, for scan_logs."""
        return (("server", self.server), ("client", self.client))

    def check_alive(self):
        for what, proc in (("server", self.server), ("client", self.client)):
            if proc is not None and proc.poll() is not None:
                raise BenchError(f"the tpot {what} exited with status {proc.returncode}: {tail(proc.log_path)}")

    def stop(self):
        if self.client is not None:
            self.processes.stop(self.client)
        self.processes.stop(self.server)


def tail(path, lines=5):
    try:
        return " | ".join(Path(path).read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------
# load generators

WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%.0f,\"duration_us\":%.0f,\"bytes\":%.0f,\"connect\":%.0f,\"read\":%.0f," ..
    "\"write\":%.0f,\"status\":%.0f,\"timeout\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


class Load:
    def __init__(self, tmp, duration, bulk_file, bulk_count):
        self.wrk_bin = find_tool("wrk")
        self.curl_bin = find_tool("curl")
        self.lua = tmp / "report.lua"
        self.lua.write_text(WRK_LUA)
        self.duration = duration
        self.bulk_file = bulk_file
        self.bulk_count = bulk_count

    def wrk(self, url, threads, connections, headers=(), duration=None):
        duration = duration or self.duration
        args = [self.wrk_bin, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", str(self.lua)]
        for header in headers:
            args += ["-H", header]
        args.append(url)
        try:
            out = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=duration + 60)
        except subprocess.TimeoutExpired:
            raise BenchError(f"wrk did not finish within {duration + 60} s") from None
        for line in out.stdout.splitlines():
            if line.startswith("BENCHJSON "):
                r = json.loads(line[len("BENCHJSON "):])
                seconds = r["duration_us"] / 1e6
                errors = {k: int(r[k]) for k in ("connect", "read", "write", "status", "timeout")}
                return {
                    "requests": int(r["requests"]),
                    "req_s": r["requests"] / seconds if seconds else 0.0,
                    "p50_ms": r["p50_us"] / 1000,
                    "p99_ms": r["p99_us"] / 1000,
                    "mb_s": r["bytes"] / seconds / 1e6 if seconds else 0.0,
                    "errors": sum(errors.values()),
                    "error_kinds": errors,
                }
        raise BenchError(f"wrk failed: {(out.stderr or out.stdout).strip()[:300]}")

    def curl(self, transfers, headers, upload):
        """`transfers` URLs in one curl run (one connection); MB/s over the sum of their times."""
        args = [self.curl_bin, "-s", "--max-time", "120", "-H", "Expect:",
                "-w", "%{http_code} %{size_download} %{size_upload} %{time_total}\\n"]
        for header in headers:
            args += ["-H", header]
        for url in transfers:
            if upload:
                args += ["-T", str(self.bulk_file)]
            args += [url, "-o", "/dev/null"]
        try:
            out = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=150)
        except subprocess.TimeoutExpired:
            raise BenchError("curl did not finish within 150 s") from None
        total_bytes, total_time, speeds = 0, 0.0, []
        fields = out.stdout.split()
        records = [fields[i:i + 4] for i in range(0, len(fields) - 3, 4)]
        for code, down, up, seconds in records:
            moved = int(float(up if upload else down))
            if code in (("201", "204") if upload else ("200",)) and moved == BULK_SIZE and float(seconds) > 0:
                total_bytes += moved
                total_time += float(seconds)
                speeds.append(round(moved / float(seconds) / 1e6, 1))
        errors = len(transfers) - len(speeds)
        return {
            "mb_s": total_bytes / total_time / 1e6 if total_time else 0.0,
            "transfers": len(speeds),
            "per_transfer_mb_s": speeds,
            "errors": errors,
            "curl_exit": out.returncode,
        }


# ---------------------------------------------------------------------------------------
# the scenarios


def scenarios(load):
    """(key, title, function(base_url_fn, headers) -> result dict, unit of CPU normalisation)."""
    return [
        ("keepalive", "keep-alive 6 B, wrk -t1 -c50",
         lambda url, h: load.wrk(url("/small"), 1, 50, h), "req"),
        ("keepalive_100k", "keep-alive 100 KB, wrk -t1 -c50",
         lambda url, h: load.wrk(url("/100k"), 1, 50, h), "req"),
        ("close", "new connection per request (Connection: close), wrk -t1 -c50",
         lambda url, h: load.wrk(url("/small"), 1, 50, [*h, "Connection: close"]), "req"),
        ("download", f"16 MB download, curl x{load.bulk_count}",
         lambda url, h: load.curl([url("/16m")] * load.bulk_count, h, upload=False), "transfer"),
        ("upload", f"16 MB upload (PUT), curl x{load.bulk_count}",
         lambda url, h: load.curl([url(f"/upload/sink{i}") for i in range(load.bulk_count)], h, upload=True),
         "transfer"),
        ("c500", "500 connections, wrk -t2 -c500",
         lambda url, h: load.wrk(url("/small"), 2, 500, h), "req"),
    ]


def measure(fn, url, headers, pids):
    before = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
    result = fn(url, headers)
    after = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
    result["cpu_s"] = {name: round(after[name] - before[name], 3) for name in pids}
    return result


def run_throughput(load, nginx, tunnel, repeat, out):
    tunnel_headers = [tunnel.host_header]
    direct_pids = lambda: {"nginx": nginx.pids()}  # noqa: E731
    tunnel_pids = lambda: {"server": [tunnel.server.pid], "client": [tunnel.client.pid], "nginx": nginx.pids()}  # noqa: E731

    log("warm-up (1 s direct, 1 s through the tunnel)")
    load.wrk(nginx.url("/small"), 1, 50, duration=1)
    load.wrk(tunnel.url("/small"), 1, 50, tunnel_headers, duration=1)
    tunnel.check_alive()

    for key, title, _, unit in scenarios(load):
        out[key] = {"title": title, "cpu_unit": unit, "direct": [], "tunnel": []}
    for rep in range(repeat):
        for key, title, fn, _ in scenarios(load):
            log(f"round {rep + 1}/{repeat}: {title}: direct")
            out[key]["direct"].append(measure(fn, nginx.url, [], direct_pids()))
            log(f"round {rep + 1}/{repeat}: {title}: tunnel")
            out[key]["tunnel"].append(measure(fn, tunnel.url, tunnel_headers, tunnel_pids()))
            tunnel.check_alive()
            time.sleep(0.5)


# ---------------------------------------------------------------------------------------
# memory


def ws_handshake(s, port, name):
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /create-tpot?subdomain={name} HTTP/1.1\r\nHost: {DOMAIN}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )


def ws_read_greeting(s):
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < 16384:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("closed during the handshake")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 101"):
        raise OSError(f"handshake answered {status.decode(errors='replace')}")
    while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("closed before the greeting")
        rest += chunk
    if rest[0] != 0x82 or rest[2:4] != b"\x11G":
        raise OSError(f"unexpected first message {rest[:16]!r}")


def ws_ping(s):
    s.sendall(b"\x89\x80" + os.urandom(4))  # masked, empty ping: keeps the tunnel from going silent


def count_dropped(socks, websocket=False):
    """How many of these idle sockets the other side closed (or, for visitors, sent anything on).

    For tunnels, pongs are expected and read away; a close frame or EOF counts as dropped.
    """
    by_fd = {s.fileno(): s for s in socks}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    dropped = 0
    for fd, _ in poller.poll(0):
        if not websocket:
            dropped += 1
            continue
        try:
            data = by_fd[fd].recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except OSError:
            dropped += 1
            continue
        if not data or data[0] == 0x88:
            dropped += 1
    return dropped


def settle_rss(pid, seconds=1.5):
    time.sleep(seconds)
    return rss_kb(pid)


def memory_idle_tunnels(processes, tmp, bin_dir, count, out, logs):
    tunnel = Tunnel(processes, tmp, bin_dir, "mem-tunnels")
    socks, failures, first_error = [], 0, None
    try:
        # Warm up: one tunnel opened and closed, so first-use allocations are in the baseline.
        with socket.create_connection((HOST, tunnel.port), timeout=10) as s:
            ws_handshake(s, tunnel.port, "warmup")
            ws_read_greeting(s)
        base = settle_rss(tunnel.server.pid)
        log(f"opening {count} idle tunnels (server RSS {base} KB)")
        started = time.monotonic()
        deadline = started + 120
        batch = 50
        while len(socks) + failures < count and time.monotonic() < deadline:
            pending = []
            for i in range(len(socks) + failures, min(count, len(socks) + failures + batch)):
                try:
                    s = socket.create_connection((HOST, tunnel.port), timeout=10)
                    ws_handshake(s, tunnel.port, f"idle{i}")
                    pending.append(s)
                except OSError as error:
                    failures += 1
                    first_error = first_error or str(error)
            for s in pending:
                try:
                    ws_read_greeting(s)
                    socks.append(s)
                except OSError as error:
                    failures += 1
                    first_error = first_error or str(error)
                    s.close()
        open_seconds = time.monotonic() - started
        for s in socks:
            ws_ping(s)
        after = settle_rss(tunnel.server.pid, 3.0)
        dropped = count_dropped(socks, websocket=True)
        tunnel.check_alive()
        out["idle_tunnels"] = {
            "requested": count, "opened": len(socks), "failures": failures, "first_error": first_error,
            "dropped_while_idle": dropped, "open_seconds": round(open_seconds, 2),
            "server_rss_kb_before": base, "server_rss_kb_after": after,
            "kb_per_tunnel": (after - base) / len(socks) if socks else None,
        }
        log(f"idle tunnels: {len(socks)} open, server RSS {base} -> {after} KB")
    finally:
        for s in socks:
            s.close()
        logs["mem-tunnels"] = scan_logs(tunnel)
        tunnel.stop()


def read_response(s):
    """True if a complete 200 response with the 6-byte body arrives on s."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            return False
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            return False
        body += chunk
    return head.startswith(b"HTTP/1.1 200") and body == SMALL_BODY


def memory_idle_visitors(processes, tmp, bin_dir, nginx, count, out, logs):
    tunnel = Tunnel(processes, tmp, bin_dir, "mem-visitors")
    socks, failures, first_error = [], 0, None
    try:
        tunnel.connect_client(nginx.port)
        host = tunnel.host_header.split(": ", 1)[1]
        request = f"GET /small HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        # Warm up: 50 requests on one kept-alive connection.
        with socket.create_connection((HOST, tunnel.port), timeout=10) as s:
            for _ in range(50):
                s.sendall(request)
                if not read_response(s):
                    raise BenchError("warm-up request through the tunnel failed")
        base_server = settle_rss(tunnel.server.pid)
        base_client = rss_kb(tunnel.client.pid)
        log(f"opening {count} idle visitor connections (server RSS {base_server} KB)")
        started = time.monotonic()
        deadline = started + 120
        batch = 40  # below the server's listen backlog (Twisted's default is 50)
        while len(socks) + failures < count and time.monotonic() < deadline:
            pending = []
            for _ in range(min(batch, count - len(socks) - failures)):
                try:
                    s = socket.create_connection((HOST, tunnel.port), timeout=10)
                    s.sendall(request)
                    pending.append(s)
                except OSError as error:
                    failures += 1
                    first_error = first_error or str(error)
            for s in pending:
                try:
                    ok = read_response(s)
                except OSError as error:
                    ok = False
                    first_error = first_error or str(error)
                if ok:
                    socks.append(s)
                else:
                    failures += 1
                    first_error = first_error or "no complete 200 response"
                    s.close()
        open_seconds = time.monotonic() - started
        after_server = settle_rss(tunnel.server.pid, 3.0)
        after_client = rss_kb(tunnel.client.pid)
        dropped = count_dropped(socks)
        # Are they still usable? A second request on a sample of them.
        sample = socks[:: max(1, len(socks) // 100)][:100]
        reusable = 0
        for s in sample:
            try:
                s.sendall(request)
                reusable += read_response(s)
            except OSError:
                pass
        tunnel.check_alive()
        n = len(socks)
        out["idle_visitors"] = {
            "requested": count, "opened": n, "failures": failures, "first_error": first_error,
            "dropped_while_idle": dropped, "sample_reused_ok": f"{reusable}/{len(sample)}",
            "open_seconds": round(open_seconds, 2),
            "server_rss_kb_before": base_server, "server_rss_kb_after": after_server,
            "client_rss_kb_before": base_client, "client_rss_kb_after": after_client,
            "kb_per_connection": (after_server - base_server) / n if n else None,
            "client_kb_per_connection": (after_client - base_client) / n if n else None,
        }
        log(f"idle visitors: {n} open, server RSS {base_server} -> {after_server} KB")
    finally:
        for s in socks:
            s.close()
        logs["mem-visitors"] = scan_logs(tunnel)
        tunnel.stop()


# ---------------------------------------------------------------------------------------
# raw TCP tunnels: `tpot tcp` + `tpot connect --listen` against the service itself

# The service, run as its own process (`python -c`, arguments PORT BLOCK_FILE) so that its
# CPU is its own. A connection starting with b"U" or b"D" and 12 digits (a byte count) is
# answered b"R" (ready); then "U": it reads that many bytes and answers "COUNT SHA256\n";
# "D": after one more byte (go) it sends that many bytes of the block repeated, then closes.
# Anything else is echoed until the peer closes. Every socket operation has a timeout.
TCP_SERVICE = r"""
import hashlib, socket, socketserver, sys
port, block_path = int(sys.argv[1]), sys.argv[2]
with open(block_path, "rb") as f:
    BLOCK = memoryview(f.read())
CHUNK, HEADER = 256 * 1024, 13


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.settimeout(30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            first = s.recv(CHUNK)
            if first[:1] in (b"U", b"D"):
                while len(first) < HEADER:
                    more = s.recv(HEADER - len(first))
                    if not more:
                        return
                    first += more
                n = int(first[1:HEADER])
                s.sendall(b"R")
                (self.sink if first[:1] == b"U" else self.source)(s, n, first[HEADER:])
            else:
                while first:
                    s.sendall(first)
                    first = s.recv(CHUNK)
        except (OSError, ValueError) as error:
            print(f"service: {error!r}", flush=True)

    def sink(self, s, n, got):
        digest, count = hashlib.sha256(got), len(got)
        while count < n:
            data = s.recv(CHUNK)
            if not data:
                break
            count += len(data)
            digest.update(data)
        s.sendall(f"{count} {digest.hexdigest()}\n".encode())

    def source(self, s, n, got):
        if not got and not s.recv(1):
            return
        sent = 0
        while sent < n:
            piece = BLOCK[:min(len(BLOCK), n - sent)]
            s.sendall(piece)
            sent += len(piece)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


Server(("127.0.0.1", port), Handler).serve_forever()
"""


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


class TcpTunnel(Tunnel):
    """Our server, a `tpot tcp` client exposing a TCP service, and `tpot connect --listen` reaching it."""

    def __init__(self, processes, tmp, bin_dir, label):
        super().__init__(processes, tmp, bin_dir, label)
        self.connector = None
        self.listen_port = None

    def connect_tcp(self, target_port, name=TCP_TUNNEL_NAME):
        self.name = name
        server = f"http://{DOMAIN}:{self.port}"
        self.client = self.processes.start(
            [str(self.bin / "tpot"), "tcp", f"{HOST}:{target_port}", "-t", server, "-s", name, "-q"],
            self.dir / "tcp-client.log", self.dir, clean_env(self.dir),
        )
        secret = wait_for_line(self.client, r"^access secret: (\S+)$", "the tpot tcp client did not connect")
        env = clean_env(self.dir)
        env["TPOT_ACCESS_SECRET"] = secret  # as --secret, but out of the process list
        self.connector = self.processes.start(
            [str(self.bin / "tpot"), "connect", name, "-t", server, "--listen", f"{HOST}:0"],
            self.dir / "connect-client.log", self.dir, env,
        )
        self.listen_port = int(wait_for_line(
            self.connector, rf"^tpot listening on {re.escape(HOST)}:(\d+)$", "tpot connect did not start listening"))

    def log_processes(self):
        return (("server", self.server), ("tcp client", self.client), ("connect client", self.connector))

    def check_alive(self):
        for what, proc in self.log_processes():
            if proc is not None and proc.poll() is not None:
                raise BenchError(f"the tpot {what} exited with status {proc.returncode}: "
                                 f"{unexpected_tail(proc.log_path)}")

    def stop(self):
        if self.connector is not None:
            self.processes.stop(self.connector)
        super().stop()


def unexpected_tail(path, lines=2):
    """The last lines of a log that are not the clients' expected announcements (secrets, URLs)."""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    kept = [line for line in text if line.strip() and not CLIENT_EXPECTED.match(line.strip())]
    return " | ".join(kept[-lines:]) or "(nothing unexpected in its log)"


def recv_exactly(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError(f"the connection closed after {len(buf)} of {n} expected bytes")
        buf += chunk
    return bytes(buf)


def tcp_connect(port):
    s = socket.create_connection((HOST, port), timeout=TCP_IO_TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def percentile(values, pct):
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[pct - 1]


class RawTcp:
    """The load of the raw TCP figures, run from this process against a port (service or tunnel)."""

    def __init__(self, block, size, connections):
        self.block = block
        self.size = size
        self.connections = connections
        digest = hashlib.sha256()
        for piece in self.pieces():
            digest.update(piece)
        self.expected = digest.hexdigest()

    def pieces(self):
        view, done = memoryview(self.block), 0
        while done < self.size:
            piece = view[:min(len(view), self.size - done)]
            yield piece
            done += len(piece)

    def _ready(self, s, kind):
        s.sendall(b"%s%012d" % (kind, self.size))
        if recv_exactly(s, 1) != b"R":
            raise OSError("the service did not answer ready")

    def upload(self, port):
        """One stream of `size` bytes to the sink; timed from the first byte to its "COUNT SHA256" answer."""
        deadline = time.monotonic() + TCP_ROUND_LIMIT
        with tcp_connect(port) as s:
            self._ready(s, b"U")
            started = time.perf_counter()
            for piece in self.pieces():
                s.sendall(piece)
                if time.monotonic() > deadline:
                    raise OSError(f"upload took over {TCP_ROUND_LIMIT:.0f} s")
            answer = b""
            while not answer.endswith(b"\n") and len(answer) < 200:
                chunk = s.recv(200)
                if not chunk:
                    raise OSError(f"closed before the sink's answer (got {answer!r})")
                answer += chunk
            seconds = time.perf_counter() - started
        count, digest = answer.decode(errors="replace").split()
        if int(count) != self.size or digest != self.expected:
            raise BenchError(f"the sink received {count} bytes (sha256 {digest[:16]}…), "
                             f"not {self.size} (sha256 {self.expected[:16]}…)")
        return {"mb_s": self.size / seconds / 1e6, "bytes": self.size, "seconds": round(seconds, 4),
                "sha256_ok": True, "transfers": 1}

    def download(self, port):
        """One stream of `size` bytes from the source; timed from the go byte to the last byte."""
        deadline = time.monotonic() + TCP_ROUND_LIMIT
        digest, count = hashlib.sha256(), 0
        buf = bytearray(TCP_CHUNK)
        view = memoryview(buf)
        with tcp_connect(port) as s:
            self._ready(s, b"D")
            started = time.perf_counter()
            s.sendall(b"G")
            while count < self.size:
                k = s.recv_into(view, min(TCP_CHUNK, self.size - count))
                if not k:
                    break
                digest.update(view[:k])
                count += k
                if time.monotonic() > deadline:
                    raise OSError(f"download took over {TCP_ROUND_LIMIT:.0f} s")
            seconds = time.perf_counter() - started
            extra = 0
            if count == self.size:  # then the source closes: nothing more may come
                s.settimeout(5)
                while extra < 1 << 20:
                    k = s.recv_into(view)
                    if not k:
                        break
                    extra += k
        if count != self.size or extra or digest.hexdigest() != self.expected:
            raise BenchError(f"the download brought {count + extra} bytes (sha256 {digest.hexdigest()[:16]}…), "
                             f"not {self.size} (sha256 {self.expected[:16]}…)")
        return {"mb_s": self.size / seconds / 1e6, "bytes": self.size, "seconds": round(seconds, 4),
                "sha256_ok": True, "transfers": 1}

    def echo_once(self, port):
        """Seconds for: connect, send 1 KB, read the same 1 KB back (then close)."""
        payload = b"E" + os.urandom(TCP_ECHO_SIZE - 1)  # not "U" or "D": the service echoes it
        started = time.perf_counter()
        with tcp_connect(port) as s:
            s.sendall(payload)
            got = recv_exactly(s, len(payload))
            seconds = time.perf_counter() - started
        if got != payload:
            raise BenchError("the 1 KB echo came back different")
        return seconds

    def setup(self, port):
        """`connections` sequential short connections: connections/s and latency percentiles."""
        deadline = time.monotonic() + TCP_ROUND_LIMIT
        latencies = []
        started = time.perf_counter()
        for _ in range(self.connections):
            if time.monotonic() > deadline:
                break
            latencies.append(self.echo_once(port))
        seconds = time.perf_counter() - started
        return {"conn_s": len(latencies) / seconds, "p50_ms": percentile(latencies, 50) * 1000,
                "p99_ms": percentile(latencies, 99) * 1000, "connections": len(latencies),
                "requested": self.connections, "seconds": round(seconds, 3),
                "max_ms": max(latencies) * 1000}

    def scenarios(self):
        """(key, title, function(port, _) -> result dict, CPU unit) like scenarios(load)."""
        mb = self.size // 2**20
        return [
            ("tcp_upload", f"raw TCP {mb} MB upload, one stream", lambda port, _: self.upload(port), "transfer"),
            ("tcp_download", f"raw TCP {mb} MB download, one stream", lambda port, _: self.download(port),
             "transfer"),
            ("tcp_setup", f"raw TCP {self.connections} sequential connections, 1 KB echo each",
             lambda port, _: self.setup(port), "connection"),
        ]


def run_tcp(processes, tmp, bin_dir, repeat, size, connections, out, logs):
    block_path = tmp / "tcp-block"
    block = os.urandom(TCP_BLOCK_SIZE)
    block_path.write_bytes(block)
    service_port = free_port()
    service = processes.start([sys.executable, "-c", TCP_SERVICE, str(service_port), str(block_path)],
                              tmp / "tcp-service.log", tmp, clean_env(tmp))
    if not wait_for_port(service_port, service):
        raise BenchError(f"the raw TCP service did not start: {tail(service.log_path)}")
    raw = RawTcp(block, size, connections)
    tunnel = TcpTunnel(processes, tmp, bin_dir, "tcp")

    def check_alive():
        tunnel.check_alive()
        if service.poll() is not None:
            raise BenchError(f"the raw TCP service exited with status {service.returncode}: "
                             f"{unexpected_tail(service.log_path)}")

    def attempt(fn, port, side, title, pids):
        try:
            return measure(fn, port, None, pids)
        except (OSError, ValueError) as error:
            check_alive()  # a process that died says more than the socket error
            # What the clients and the service said last, if anything unexpected (not their secrets).
            said = [(what, unexpected_tail(proc.log_path, 1)) for what, proc in
                    (*tunnel.log_processes()[1:], ("service", service)) if proc is not None]
            said = "; ".join(f"{what}: {line}" for what, line in said if not line.startswith("("))
            raise BenchError(f"{title}, {side}: {error}" + (f" ({said})" if said else "")) from None

    try:
        tunnel.connect_tcp(service_port)
        log(f"TCP tunnel {tunnel.name} on {DOMAIN}:{tunnel.port} -> service {HOST}:{service_port}; "
            f"tpot connect listening on {HOST}:{tunnel.listen_port}")
        direct_pids = lambda: {"service": [service.pid]}  # noqa: E731
        tunnel_pids = lambda: {"server": [tunnel.server.pid], "tcp_client": [tunnel.client.pid],  # noqa: E731
                               "connect_client": [tunnel.connector.pid], "service": [service.pid]}
        warm = lambda port, _: {"seconds": raw.echo_once(port)}  # noqa: E731
        attempt(warm, service_port, "direct", "raw TCP warm-up echo", direct_pids())
        attempt(warm, tunnel.listen_port, "through the tunnel", "raw TCP warm-up echo", tunnel_pids())
        for key, title, _, unit in raw.scenarios():
            out["scenarios"][key] = {"title": title, "cpu_unit": unit, "direct": [], "tunnel": []}
        for rep in range(repeat):
            for key, title, fn, _ in raw.scenarios():
                log(f"round {rep + 1}/{repeat}: {title}: direct")
                out["scenarios"][key]["direct"].append(attempt(fn, service_port, "direct", title, direct_pids()))
                log(f"round {rep + 1}/{repeat}: {title}: tunnel")
                out["scenarios"][key]["tunnel"].append(
                    attempt(fn, tunnel.listen_port, "through the tunnel", title, tunnel_pids()))
                check_alive()
    finally:
        logs["tcp"] = scan_logs(tunnel, extra=(("service", service),))
        tunnel.stop()
        processes.stop(service)


# ---------------------------------------------------------------------------------------
# logs: anything that looked wrong in the server or client

NOTABLE = re.compile(r"#(warn|error|critical)\]|Unhandled|Traceback \(most recent call last\)")
REFUSED = re.compile(r"refused (\d{3}):")
LEVEL = re.compile(r"^\S+ \[[^\]#]*#(\w+)\]")
CLIENT_EXPECTED = re.compile(r"^tpot connected$|^http://\S+$|^TCP tunnel \S+ on \S+$|^access secret: \S+$"
                             r"|^connect with: tpot connect .*$|^tpot listening on \S+$")


def scan_logs(tunnel, extra=()):
    """What the tunnel's processes (and `extra` (what, process) pairs) logged that looked wrong."""
    report = {}
    for what, proc in (*tunnel.log_processes(), *extra):
        if proc is None:
            continue
        try:
            lines = Path(proc.log_path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        refused = Counter(m.group(1) for line in lines for m in [REFUSED.search(line)] if m)
        levels = Counter(m.group(1) for line in lines for m in [LEVEL.search(line)] if m)
        notable = Counter()
        for line in lines:
            if what != "server":  # clients and the raw TCP service: anything unexpected
                interesting = line.strip() and not CLIENT_EXPECTED.match(line.strip())
            else:
                interesting = NOTABLE.search(line) and not REFUSED.search(line)
            if interesting:
                # Drop the timestamp so repeated lines count together.
                notable[re.sub(r"^\d{4}-\d\d-\d\dT\S+ ", "", line)[:200]] += 1
        report[what] = {
            "exit_status": proc.poll(),
            "refusals_by_status": dict(refused),
            "log_lines": len(lines),
            "log_lines_by_level": dict(levels),
            "notable_lines": [{"count": c, "line": line} for line, c in notable.most_common(10)],
        }
    return report


# ---------------------------------------------------------------------------------------
# report


def summarise(samples, field):
    values = [s[field] for s in samples]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


ROWS = [
    # (scenario, field, label, format)
    ("keepalive", "req_s", "keep-alive 6 B (wrk -t1 -c50): req/s", "{:,.0f}"),
    ("keepalive", "p50_ms", "keep-alive 6 B: p50 latency ms", "{:.2f}"),
    ("keepalive", "p99_ms", "keep-alive 6 B: p99 latency ms", "{:.2f}"),
    ("keepalive_100k", "req_s", "keep-alive 100 KB (wrk -t1 -c50): req/s", "{:,.0f}"),
    ("keepalive_100k", "p99_ms", "keep-alive 100 KB: p99 latency ms", "{:,.2f}"),
    ("close", "req_s", "new connection per request: req/s", "{:,.0f}"),
    ("download", "mb_s", "16 MB download: MB/s", "{:,.1f}"),
    ("upload", "mb_s", "16 MB upload: MB/s", "{:,.1f}"),
    ("c500", "req_s", "500 connections (wrk -t2 -c500): req/s", "{:,.0f}"),
    ("c500", "errors", "500 connections: errors", "{:,.0f}"),
]


def tcp_rows(cfg):
    """The raw TCP rows, labelled with this run's sizes (see ROWS)."""
    mb, n = cfg["bytes"] // 2**20, cfg["connections"]
    return [
        ("tcp_upload", "mb_s", f"{mb} MB upload, one stream: MB/s", "{:,.1f}"),
        ("tcp_download", "mb_s", f"{mb} MB download, one stream: MB/s", "{:,.1f}"),
        ("tcp_setup", "conn_s", f"{n} sequential connections: conn/s", "{:,.1f}"),
        ("tcp_setup", "p50_ms", "connect + 1 KB echo: p50 latency ms", "{:,.2f}"),
        ("tcp_setup", "p99_ms", "connect + 1 KB echo: p99 latency ms", "{:,.2f}"),
    ]


def summary_rows(scenarios, spec):
    """One row per (scenario, field) of `spec` that has figures on both sides."""
    rows = []
    for key, field, label, fmt in spec:
        sc = scenarios.get(key)
        if not sc or not sc["direct"] or not sc["tunnel"]:
            continue
        direct, tunnel = summarise(sc["direct"], field), summarise(sc["tunnel"], field)
        ratio = tunnel["median"] / direct["median"] if direct["median"] else None
        rows.append({"scenario": key, "metric": field, "label": label, "format": fmt,
                     "direct": direct, "tunnel": tunnel, "ratio": ratio})
    return rows


TCP_CPU = (("tunnel", ("server", "tcp_client", "connect_client", "service")), ("direct", ("service",)))


def tcp_cpu(tcp):
    """CPU seconds per transfer or per connection of the raw TCP scenarios, like the HTTP ones."""
    mb = tcp["config"]["bytes"] // 2**20
    cpu = []
    for key, sc in tcp["scenarios"].items():
        per_connection = sc["cpu_unit"] == "connection"
        entry = {"scenario": key, "title": sc["title"], "unit": "per connection" if per_connection else f"per {mb} MB"}
        for side, procs in TCP_CPU:
            for proc in procs:
                values = [s["cpu_s"][proc] / (s["connections"] if per_connection else s["transfers"])
                          for s in sc[side] if (s["connections"] if per_connection else s["transfers"])]
                if values:
                    entry[f"{side}_{proc}"] = {"median": statistics.median(values), "min": min(values),
                                               "max": max(values)}
        if len(entry) > 3:  # some figures
            cpu.append(entry)
    return cpu


def build_summary(results):
    rows = summary_rows(results["scenarios"], ROWS)
    tcp = results.get("tcp")
    if tcp:
        rows += summary_rows(tcp["scenarios"], tcp_rows(tcp["config"]))
    cpu = []
    for key, sc in results["scenarios"].items():
        per = 1000 if sc["cpu_unit"] == "req" else 1
        entry = {"scenario": key, "title": sc["title"], "unit": "per 1000 requests" if per == 1000 else "per 16 MB"}
        for side, procs in (("tunnel", ("server", "client", "nginx")), ("direct", ("nginx",))):
            for proc in procs:
                values = []
                for s in sc[side]:
                    done = s["requests"] if per == 1000 else s["transfers"]
                    if done:
                        values.append(s["cpu_s"][proc] / done * per)
                if values:
                    entry[f"{side}_{proc}"] = {"median": statistics.median(values), "min": min(values),
                                               "max": max(values)}
        cpu.append(entry)
    if tcp:
        cpu += tcp_cpu(tcp)
    return rows, cpu


def figure(stats, fmt):
    if stats["n"] == 1:
        return fmt.format(stats["median"])
    return f"{fmt.format(stats['median'])} [{fmt.format(stats['min'])}–{fmt.format(stats['max'])}]"


def render(results):
    rows, cpu = results["summary"], results["cpu"]
    cfg = results["config"]
    tcp = results.get("tcp")
    lines = [
        f"TPoT benchmark {results['timestamp']} — {results['machine']['nproc']} CPU "
        f"({results['machine']['cpu_model']}), Linux {results['machine']['kernel']}, "
        f"Python {results['machine']['python']}",
    ]
    if results["scenarios"]:
        lines.append(f"{cfg['repeat']} round(s) of {cfg['duration_s']} s per wrk figure, alternating direct/tunnel; "
                     f"median [min–max]; bulk = {cfg['bulk_count']} x 16 MB per figure; MB = 10^6 bytes")
    lines.append("")

    def cells(r):
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.3f}"
        return (r["label"], figure(r["direct"], r["format"]), figure(r["tunnel"], r["format"]), ratio)

    tables = []
    http_rows = [r for r in rows if not r["scenario"].startswith("tcp_")]
    tcp_rows_ = [r for r in rows if r["scenario"].startswith("tcp_")]
    if http_rows:
        tables.append([("metric", "direct (nginx)", "through tunnel", "tunnel/direct"), *map(cells, http_rows)])
    if tcp_rows_:
        tables.append([("raw TCP tunnel", "direct (service)", "through tunnel", "tunnel/direct"),
                       *map(cells, tcp_rows_)])
    widths = [max((len(row[i]) for table in tables for row in table), default=0) for i in range(4)]
    for n, table in enumerate(tables):
        if n:
            lines.append("")
        if table[0][0] == "raw TCP tunnel":
            tc = tcp["config"]
            lines.append(f"raw TCP: {tc['repeat']} round(s), alternating; direct = a Python source/sink/echo service, "
                         f"through = tpot connect --listen -> server -> tpot tcp -> it;")
            lines.append(f"  one stream each way of {tc['bytes'] // 2**20} MiB, timed first byte to last, count + "
                         f"sha256 checked; a connection = connect, send 1 KB, read its echo, close")
        for i, row in enumerate(table):
            lines.append("  ".join(cell.ljust(widths[j]) if j == 0 else cell.rjust(widths[j])
                                   for j, cell in enumerate(row)))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
    other_errors = [
        f"{key}: direct {sum(s['errors'] for s in sc['direct'])}, tunnel {sum(s['errors'] for s in sc['tunnel'])}"
        for key, sc in results["scenarios"].items()
        if key != "c500" and sum(s["errors"] for s in sc["direct"] + sc["tunnel"])
    ]
    if other_errors:
        lines.append("wrk errors (connect/read/write, > 2 s timeouts, non-2xx) in other scenarios, all rounds: "
                     + "; ".join(other_errors))

    def v(c, name):
        return f"{c[name]['median']:.4f}" if name in c else "—"

    http_cpu = [c for c in cpu if not c["scenario"].startswith("tcp_")]
    if http_cpu:
        lines += ["", "CPU seconds (median)                  tunnel server  tunnel client  nginx (tunnel)  nginx (direct)"]
        for c in http_cpu:
            label = f"{c['scenario']} {c['unit']}"
            lines.append(f"{label:<38}{v(c, 'tunnel_server'):>14}{v(c, 'tunnel_client'):>15}"
                         f"{v(c, 'tunnel_nginx'):>16}{v(c, 'direct_nginx'):>16}")
    tcp_cpu_ = [c for c in cpu if c["scenario"].startswith("tcp_")]
    if tcp_cpu_:
        lines += ["", "CPU seconds (median), raw TCP         tunnel server  tcp client  connect client  "
                      "service (tunnel)  service (direct)"]
        for c in tcp_cpu_:
            label = f"{c['scenario']} {c['unit']}"
            lines.append(f"{label:<38}{v(c, 'tunnel_server'):>13}{v(c, 'tunnel_tcp_client'):>12}"
                         f"{v(c, 'tunnel_connect_client'):>16}{v(c, 'tunnel_service'):>18}"
                         f"{v(c, 'direct_service'):>18}")
    lines.append("")
    mem = results.get("memory", {})
    t = mem.get("idle_tunnels")
    if t:
        per = f"{t['kb_per_tunnel']:.1f} KB per tunnel" if t["kb_per_tunnel"] is not None else "n/a"
        lines.append(f"server RSS, {t['opened']}/{t['requested']} idle tunnels: {t['server_rss_kb_before'] / 1024:.1f} MiB -> "
                     f"{t['server_rss_kb_after'] / 1024:.1f} MiB = {per} (failed {t['failures']}, dropped {t['dropped_while_idle']})")
    v = mem.get("idle_visitors")
    if v:
        per = f"{v['kb_per_connection']:.1f} KB per connection" if v["kb_per_connection"] is not None else "n/a"
        cper = f"{v['client_kb_per_connection']:.1f}" if v["client_kb_per_connection"] is not None else "n/a"
        lines.append(f"server RSS, {v['opened']}/{v['requested']} idle visitor connections: "
                     f"{v['server_rss_kb_before'] / 1024:.1f} MiB -> {v['server_rss_kb_after'] / 1024:.1f} MiB = {per} "
                     f"(client {cper} KB per connection; failed {v['failures']}, dropped {v['dropped_while_idle']}, "
                     f"reused {v['sample_reused_ok']})")
    problems = results.get("problems", [])
    if problems:
        lines += ["", "looked wrong:"] + [f"  {p}" for p in problems]
    # No double blank lines where a part is missing (a raw-TCP-only run, a failed part).
    lines = [line for i, line in enumerate(lines) if line or (i and lines[i - 1])]
    return "\n".join(lines).rstrip("\n")


def collect_problems(results):
    problems = []
    for where, report in results.get("logs", {}).items():
        for what, r in report.items():
            if r["exit_status"] not in (None, 0) and r["exit_status"] != -signal.SIGTERM:
                problems.append(f"{where} {what} exited with status {r['exit_status']}")
            if r.get("log_lines_by_level", {}).get("debug"):
                problems.append(f"{where} {what} log recorded {r['log_lines_by_level']['debug']} debug-level lines "
                                f"(of {r['log_lines']})")
            if r["refusals_by_status"]:
                problems.append(f"{where} {what} refusals by status: {r['refusals_by_status']}")
            for n in r["notable_lines"][:3]:
                problems.append(f"{where} {what} log x{n['count']}: {n['line'][:150]}")
    tcp = results.get("tcp")
    if tcp and tcp.get("error"):
        problems.append(f"raw TCP part failed: {tcp['error']}")
    for s in (tcp or {}).get("scenarios", {}).get("tcp_setup", {}).get("tunnel", []):
        if s["connections"] < s["requested"]:
            problems.append(f"raw TCP: only {s['connections']} of {s['requested']} connections "
                            f"within {TCP_ROUND_LIMIT:.0f} s")
    for key in ("idle_tunnels", "idle_visitors"):
        m = results.get("memory", {}).get(key)
        if m and (m["failures"] or m["dropped_while_idle"]):
            problems.append(f"{key}: {m['failures']} failed to open ({m['first_error']}), "
                            f"{m['dropped_while_idle']} dropped while idle")
    return problems


def main():
    # Ctrl-C and SIGTERM both unwind through the `finally` that stops every process started
    # here (even when SIGINT was ignored by whoever started us in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    duration = env_int("BENCH_DURATION", 10, 1, 600)
    repeat = env_int("BENCH_REPEAT", 3, 1, 20)
    tunnels = env_int("BENCH_TUNNELS", 1000, 1, 10000)
    visitors = env_int("BENCH_VISITORS", 5000, 1, 10000)
    bulk_count = env_int("BENCH_BULK_COUNT", 4, 1, 50)
    tcp_mode = os.environ.get("BENCH_TCP", "1").strip().lower() or "1"
    if tcp_mode not in ("0", "1", "only"):
        raise BenchError(f"BENCH_TCP must be 1 (default), 0 (skip the raw TCP part) or only, not {tcp_mode!r}.")
    tcp_bytes = env_int("BENCH_TCP_MB", 64, 1, 4096) * 2**20
    tcp_connections = env_int("BENCH_TCP_CONNECTIONS", 50, 1, 10000)
    nofile = raise_nofile()
    if nofile < visitors * 2 + 1000:
        log(f"warning: open-file limit {nofile} is low for {visitors} visitor connections")
    bin_dir = venv_bin()
    timestamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results = {
        "timestamp": timestamp,
        "machine": machine_info(tools=tcp_mode != "only"),
        "config": {"duration_s": duration, "repeat": repeat, "idle_tunnels": tunnels, "idle_visitors": visitors,
                   "bulk_count": bulk_count, "bulk_bytes": BULK_SIZE},
        "scenarios": {},
        "memory": {},
        "logs": {},
    }
    if tcp_mode != "0":
        results["tcp"] = {"config": {"repeat": repeat, "bytes": tcp_bytes, "connections": tcp_connections,
                                     "echo_bytes": TCP_ECHO_SIZE},
                          "scenarios": {}}
    processes = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="tpot-bench-"))

    def raw_tcp():
        try:
            run_tcp(processes, tmp, bin_dir, repeat, tcp_bytes, tcp_connections, results["tcp"], results["logs"])
        except BenchError as error:  # one line in the report; the other figures stand
            results["tcp"]["error"] = str(error)
            log(f"raw TCP part failed: {error}")

    try:
        if tcp_mode == "only":
            raw_tcp()
        else:
            nginx = Nginx(processes, tmp, nofile)
            log(f"nginx on {HOST}:{nginx.port} (temporary files in {tmp})")
            load = Load(tmp, duration, nginx.bulk_file, bulk_count)
            tunnel = Tunnel(processes, tmp, bin_dir, "throughput")
            tunnel.connect_client(nginx.port)
            log(f"tunnel {tunnel.name}.{DOMAIN}:{tunnel.port} -> nginx")
            try:
                run_throughput(load, nginx, tunnel, repeat, results["scenarios"])
            finally:
                results["logs"]["throughput"] = scan_logs(tunnel)
                tunnel.stop()
            if tcp_mode == "1":
                raw_tcp()
            memory_idle_tunnels(processes, tmp, bin_dir, tunnels, results["memory"], results["logs"])
            memory_idle_visitors(processes, tmp, bin_dir, nginx, visitors, results["memory"], results["logs"])
            nginx_errors = tail(tmp / "nginx-error.log", 3)
            if nginx_errors not in ("", "(no log)"):
                results["nginx_error_log_tail"] = nginx_errors
    finally:
        processes.stop_all()
        if os.environ.get("BENCH_KEEP_TMP"):
            log(f"logs and configuration kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return finish(results, timestamp)


def finish(results, timestamp):
    """Summarise, print and write the results; 1 if the raw TCP part failed."""
    results["summary"], results["cpu"] = build_summary(results)
    results["problems"] = collect_problems(results)
    text = render(results)
    results["table"] = text
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{timestamp}.json"
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    partial.replace(path)
    print(text)
    print(f"\n(written to {path.relative_to(REPO)})")
    return 1 if results.get("tcp", {}).get("error") else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        sys.stderr.write(f"bench: {error}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("bench: interrupted; everything it started has been stopped.\n")
        sys.exit(130)
