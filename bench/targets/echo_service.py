"""The raw TCP service: `python echo_service.py PORT BLOCK_FILE`, run as its own process so
that its CPU is its own.

A connection starting with b"U" or b"D" and 12 digits (a byte count) is answered b"R"
(ready); then "U": it reads that many bytes and answers "COUNT SHA256\\n"; "D": after one
more byte (go) it sends that many bytes of the block repeated, then closes. Anything else
is echoed until the peer closes. Every socket operation has a timeout.
"""

import hashlib
import socket
import socketserver
import sys

CHUNK, HEADER = 256 * 1024, 13
IO_TIMEOUT = 30


class Handler(socketserver.BaseRequestHandler):
    block = b""

    def handle(self):
        s = self.request
        s.settimeout(IO_TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            first = s.recv(CHUNK)
            if first[:1] in (b"U", b"D"):
                self.transfer(s, first)
            else:
                while first:
                    s.sendall(first)
                    first = s.recv(CHUNK)
        except (OSError, ValueError) as error:
            print(f"service: {error!r}", flush=True)

    def transfer(self, s, first):
        while len(first) < HEADER:
            more = s.recv(HEADER - len(first))
            if not more:
                return
            first += more
        n = int(first[1:HEADER])
        s.sendall(b"R")
        (self.sink if first[:1] == b"U" else self.source)(s, n, first[HEADER:])

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
            piece = self.block[:min(len(self.block), n - sent)]
            s.sendall(piece)
            sent += len(piece)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main(port, block_path):
    with open(block_path, "rb") as f:
        Handler.block = memoryview(f.read())
    Server(("127.0.0.1", int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:3])
