"""The inspector's cost per exchange in-process, without sockets or timing noise from other
processes: one client Conversation relays keep-alive exchanges shaped like the benchmark's
(wrk's request, nginx's 6-byte response) with the inspector off, then on, and prints the
CPU µs per exchange of each (best of a few rounds) and the difference; then the same with
every response's head different (its ETag), as varied traffic has them.

    .venv/bin/python -m bench.capture_cost [EXCHANGES]

Printed figures only: for judging a change to the relay's framing or capture; under
`valgrind --tool=callgrind` (a small EXCHANGES) it gives instruction counts instead.
"""

import sys
import time

from tpot.client.conversation import Conversation
from tpot.client.inspector.capture import ConversationCapture, ExchangeStore
from tpot.client.visitors import VisitorOptions
from tpot.http.rewrite import Forwarded

ROUNDS = 5
REQUEST = b"GET /small HTTP/1.1\r\nHost: inspon.localhost:41234\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 21:00:00 GMT\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 6\r\n"
            b"Last-Modified: Sun, 06 Dec 2026 20:59:00 GMT\r\nConnection: keep-alive\r\n"
            b'ETag: "6934a8f4-6"\r\nAccept-Ranges: bytes\r\n\r\nhello\n')
VARIED = [RESPONSE.replace(b"6934a8f4", b"%08x" % n) for n in range(1000)]


class _Quiet:
    """The tunnel, the target's transport and the reactor's clock, doing nothing."""

    def send_data(self, conversation_id, data):
        pass

    def write(self, data):
        pass

    def writeSequence(self, data):
        pass

    def registerProducer(self, producer, streaming):
        pass

    def seconds(self):
        return 0.0


class _Tunnel:
    name, proto, public_url, target, status = "bench", "http", "http://bench.localhost", "http://localhost", "online"

    def __init__(self):
        self.store = ExchangeStore()

    def capture(self, visitor):
        return ConversationCapture(self.store, self, visitor)


def conversation(inspect):
    """A connected Conversation as `tpot http -q` makes it (Host rewrite, X-Forwarded-*)."""
    quiet = _Quiet()
    visitors = VisitorOptions(quiet, inspected=_Tunnel()) if inspect else None
    relay = Conversation(quiet, 1, "127.0.0.1:8080", Forwarded("127.0.0.1", "http"), visitors, "127.0.0.1")
    relay.connected(quiet)
    return relay


def cost(inspect, exchanges, responses=(RESPONSE,)):
    """CPU seconds for `exchanges` request/response pairs through one conversation, the
    responses taken in turn from `responses`."""
    relay = conversation(inspect)
    turns = len(responses)
    started = time.process_time()
    for n in range(exchanges):
        relay.from_tunnel(REQUEST)
        relay.from_target(responses[n % turns])
    return time.process_time() - started


def main(argv):
    exchanges = int(argv[0]) if argv else 20000
    print(f"{exchanges} exchanges, best of {ROUNDS}, CPU µs per exchange:")
    for what, responses in (("the same response", (RESPONSE,)), ("a new head each time", VARIED)):
        best = {}
        for _ in range(ROUNDS):
            for inspect in (False, True):
                spent = cost(inspect, exchanges, responses) / exchanges * 1e6
                best[inspect] = min(best.get(inspect, spent), spent)
        print(f"  {what}: inspector off {best[False]:.2f}, on {best[True]:.2f}: +{best[True] - best[False]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
