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

Needs wrk, nginx and curl on PATH (the Makefile target installs them), and the project's
virtualenv (twistd and tpot next to this interpreter, or in .venv/bin).
"""

import base64
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
# Settings that must not leak into the processes under test from the outer environment.
LEAKY = ("DOMAIN", "AUTH_KEY", "PORT", "TPOT_SERVER", "TPOT_AUTH_KEY")


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


def machine_info():
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
        "nginx": version([find_tool("nginx", ["/usr/sbin/nginx"]), "-v"]),
        "wrk": version([find_tool("wrk"), "-v"]),
        "curl": version([find_tool("curl"), "--version"]),
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
# logs: anything that looked wrong in the server or client

NOTABLE = re.compile(r"#(warn|error|critical)\]|Unhandled|Traceback \(most recent call last\)")
REFUSED = re.compile(r"refused (\d{3}):")
LEVEL = re.compile(r"^\S+ \[[^\]#]*#(\w+)\]")
CLIENT_EXPECTED = re.compile(r"^tpot connected$|^http://\S+$")


def scan_logs(tunnel):
    report = {}
    for what, proc in (("server", tunnel.server), ("client", tunnel.client)):
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
            if what == "client":
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


def build_summary(results):
    rows = []
    for key, field, label, fmt in ROWS:
        sc = results["scenarios"][key]
        direct, tunnel = summarise(sc["direct"], field), summarise(sc["tunnel"], field)
        ratio = tunnel["median"] / direct["median"] if direct["median"] else None
        rows.append({"scenario": key, "metric": field, "label": label, "format": fmt,
                     "direct": direct, "tunnel": tunnel, "ratio": ratio})
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
    return rows, cpu


def figure(stats, fmt):
    if stats["n"] == 1:
        return fmt.format(stats["median"])
    return f"{fmt.format(stats['median'])} [{fmt.format(stats['min'])}–{fmt.format(stats['max'])}]"


def render(results):
    rows, cpu = results["summary"], results["cpu"]
    cfg = results["config"]
    lines = [
        f"TPoT benchmark {results['timestamp']} — {results['machine']['nproc']} CPU "
        f"({results['machine']['cpu_model']}), Linux {results['machine']['kernel']}, "
        f"Python {results['machine']['python']}",
        f"{cfg['repeat']} round(s) of {cfg['duration_s']} s per wrk figure, alternating direct/tunnel; "
        f"median [min–max]; bulk = {cfg['bulk_count']} x 16 MB per figure; MB = 10^6 bytes",
        "",
    ]
    table = [("metric", "direct (nginx)", "through tunnel", "tunnel/direct")]
    for r in rows:
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.3f}"
        table.append((r["label"], figure(r["direct"], r["format"]), figure(r["tunnel"], r["format"]), ratio))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for i, row in enumerate(table):
        lines.append("  ".join(cell.ljust(widths[j]) if j == 0 else cell.rjust(widths[j]) for j, cell in enumerate(row)))
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
    lines += ["", "CPU seconds (median)                  tunnel server  tunnel client  nginx (tunnel)  nginx (direct)"]
    for c in cpu:
        def v(name):
            return f"{c[name]['median']:.4f}" if name in c else "—"
        label = f"{c['scenario']} {c['unit']}"
        lines.append(f"{label:<38}{v('tunnel_server'):>14}{v('tunnel_client'):>15}{v('tunnel_nginx'):>16}"
                     f"{v('direct_nginx'):>16}")
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
    return "\n".join(lines)


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
    nofile = raise_nofile()
    if nofile < visitors * 2 + 1000:
        log(f"warning: open-file limit {nofile} is low for {visitors} visitor connections")
    bin_dir = venv_bin()
    timestamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results = {
        "timestamp": timestamp,
        "machine": machine_info(),
        "config": {"duration_s": duration, "repeat": repeat, "idle_tunnels": tunnels, "idle_visitors": visitors,
                   "bulk_count": bulk_count, "bulk_bytes": BULK_SIZE},
        "scenarios": {},
        "memory": {},
        "logs": {},
    }
    processes = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="tpot-bench-"))
    try:
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
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        sys.stderr.write(f"bench: {error}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("bench: interrupted; everything it started has been stopped.\n")
        sys.exit(130)
