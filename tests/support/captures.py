"""A client Conversation with the inspector's capture on, without sockets (shared by
test_inspector_capture, test_inspector_present and test_inspector_views)."""

from tests.support.conversations import Harness
from tpot.client.inspector.capture import ConversationCapture, ExchangeStore


class Watched:
    """A tunnel as the capture and the API see it."""

    name = "web"
    proto = "http"
    public_url = "https://web.example.com"
    target = "http://localhost:8000"
    status = "online"

    def __init__(self, store):
        self.store = store

    def capture(self, visitor):
        return ConversationCapture(self.store, self, visitor)


def inspected(store=None, tunnel=None, **options):
    """A Harness whose conversation is captured for `tunnel` (a Watched one by default)
    into `store`."""
    store = store if store is not None else ExchangeStore()
    harness = Harness(quiet=True, inspected=tunnel or Watched(store), **options)
    return harness, store


def relay(requests, responses, request_pieces=None, response_pieces=None, store=None, tunnel=None):
    """A conversation that relays `requests` to the target and `responses` back."""
    harness, store = inspected(store, tunnel)
    harness.visit(*(request_pieces or [requests]))
    harness.target_up()
    harness.answer(*(response_pieces or [responses]))
    return harness, store
