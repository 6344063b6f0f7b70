"""Raw TCP tunnels: `tpot tcp` + `tpot connect --listen` against the service itself
(bench/targets/echo_service.py), driven from this process."""

import hashlib
import os
import socket
import statistics
import time

from bench.common import DOMAIN, HOST, BenchError, log
from bench.logscan import scan_logs, unexpected_tail
from bench.scenarios import Scenario, alternate, measure
from bench.services import TcpTunnel, start_service

TCP_BLOCK_SIZE = 1024 * 1024  # the source sends (and the upload sends) this random block over and over
TCP_CHUNK = 256 * 1024
TCP_ECHO_SIZE = 1024
TCP_IO_TIMEOUT = 30.0  # any one socket operation of the raw TCP measurements
TCP_ROUND_LIMIT = 120.0  # seconds any one raw TCP figure may take


def recv_exactly(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError(f"the connection closed after {len(buf)} of {n} expected bytes")
        buf += chunk
    return bytes(buf)


def recv_line(s, limit=200):
    answer = b""
    while not answer.endswith(b"\n") and len(answer) < limit:
        chunk = s.recv(limit)
        if not chunk:
            raise OSError(f"closed before the sink's answer (got {answer!r})")
        answer += chunk
    return answer


def tcp_connect(port):
    s = socket.create_connection((HOST, port), timeout=TCP_IO_TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def percentile(values, pct):
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[pct - 1]


def check_deadline(deadline, what):
    if time.monotonic() > deadline:
        raise OSError(f"{what} took over {TCP_ROUND_LIMIT:.0f} s")


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

    def _checked(self, what, count, digest, seconds):
        if count != self.size or digest != self.expected:
            raise BenchError(f"{what} {count} bytes (sha256 {digest[:16]}…), "
                             f"not {self.size} (sha256 {self.expected[:16]}…)")
        return {"mb_s": self.size / seconds / 1e6, "bytes": self.size, "seconds": round(seconds, 4),
                "sha256_ok": True, "transfers": 1}

    def upload(self, port):
        """One stream of `size` bytes to the sink; timed from the first byte to its "COUNT SHA256" answer."""
        deadline = time.monotonic() + TCP_ROUND_LIMIT
        with tcp_connect(port) as s:
            self._ready(s, b"U")
            started = time.perf_counter()
            for piece in self.pieces():
                s.sendall(piece)
                check_deadline(deadline, "upload")
            answer = recv_line(s)
            seconds = time.perf_counter() - started
        count, digest = answer.decode(errors="replace").split()
        return self._checked("the sink received", int(count), digest, seconds)

    def download(self, port):
        """One stream of `size` bytes from the source; timed from the go byte to the last byte."""
        deadline = time.monotonic() + TCP_ROUND_LIMIT
        digest, count = hashlib.sha256(), 0
        view = memoryview(bytearray(TCP_CHUNK))
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
                check_deadline(deadline, "download")
            seconds = time.perf_counter() - started
            extra = self._drain(s, view) if count == self.size else 0
        return self._checked("the download brought", count + extra, digest.hexdigest(), seconds)

    @staticmethod
    def _drain(s, view):
        """What still comes after the whole download (the source then closes: nothing may)."""
        s.settimeout(5)
        extra = 0
        while extra < 1 << 20:
            k = s.recv_into(view)
            if not k:
                break
            extra += k
        return extra

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
        """The raw TCP scenarios; run(port) -> result dict."""
        mb = self.size // 2**20
        return [
            Scenario("tcp_upload", f"raw TCP {mb} MB upload, one stream", self.upload, "transfer"),
            Scenario("tcp_download", f"raw TCP {mb} MB download, one stream", self.download, "transfer"),
            Scenario("tcp_setup", f"raw TCP {self.connections} sequential connections, 1 KB echo each",
                     self.setup, "connection"),
        ]


class TcpRun:
    """The service and the TCP tunnel of one raw TCP part, and how one figure is taken on each side."""

    def __init__(self, processes, tmp, bin_dir, raw):
        block_path = tmp / "tcp-block"
        block_path.write_bytes(raw.block)
        self.service, self.service_port = start_service(processes, tmp, block_path)
        self.tunnel = TcpTunnel(processes, tmp, bin_dir, "tcp")

    def check_alive(self):
        self.tunnel.check_alive()
        if self.service.poll() is not None:
            raise BenchError(f"the raw TCP service exited with status {self.service.returncode}: "
                             f"{unexpected_tail(self.service.log_path)}")

    def what_they_said(self):
        """What the clients and the service said last, if anything unexpected (not their secrets)."""
        said = [(what, unexpected_tail(proc.log_path, 1)) for what, proc in
                (*self.tunnel.log_processes()[1:], ("service", self.service)) if proc is not None]
        said = "; ".join(f"{what}: {line}" for what, line in said if not line.startswith("("))
        return f" ({said})" if said else ""

    def attempt(self, fn, side, title, pids):
        try:
            return measure(fn, pids)
        except (OSError, ValueError) as error:
            self.check_alive()  # a process that died says more than the socket error
            raise BenchError(f"{title}, {side}: {error}{self.what_they_said()}") from None

    def direct(self, sc):
        return self.attempt(lambda: sc.run(self.service_port), "direct", sc.title,
                            {"service": [self.service.pid]})

    def through(self, sc):
        t = self.tunnel
        pids = {"server": [t.server.pid], "tcp_client": [t.client.pid], "connect_client": [t.connector.pid],
                "service": [self.service.pid]}
        return self.attempt(lambda: sc.run(t.listen_port), "through the tunnel", sc.title, pids)

    def log_report(self):
        return scan_logs((*self.tunnel.log_processes(), ("service", self.service)))


def run_tcp(processes, tmp, bin_dir, repeat, size, connections, out, logs):
    raw = RawTcp(os.urandom(TCP_BLOCK_SIZE), size, connections)
    run = TcpRun(processes, tmp, bin_dir, raw)
    tunnel = run.tunnel
    try:
        tunnel.connect_tcp(run.service_port)
        log(f"TCP tunnel {tunnel.name} on {DOMAIN}:{tunnel.port} -> service {HOST}:{run.service_port}; "
            f"tpot connect listening on {HOST}:{tunnel.listen_port}")
        warm = Scenario("warm-up", "raw TCP warm-up echo", lambda port: {"seconds": raw.echo_once(port)}, None)
        run.direct(warm)
        run.through(warm)
        alternate(raw.scenarios(), repeat, (("direct", run.direct), ("tunnel", run.through)), out["scenarios"],
                  run.check_alive)
    finally:
        logs["tcp"] = run.log_report()
        tunnel.stop()
        processes.stop(run.service)
