"""What tpot relies on in Autobahn beyond its documented interface, checked against the
installed Autobahn: every name in frames.AUTOBAHN_NAMES must exist, only frames.py may use
such names, and no name tpot's protocols add may replace one of Autobahn's unnoticed.

A failure names the attribute: an Autobahn release has renamed or dropped it (look at how
frames.py uses it before raising setup.py's bound), or tpot has started to lean on another
internal (list it in frames.AUTOBAHN_NAMES and go through frames.py)."""

import importlib
import re
from pathlib import Path

import autobahn
import pytest
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket import interfaces
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock

from tests.unit.test_frames import autobahn_client, autobahn_server, clock  # noqa: F401 (a fixture)
from tpot.client.connect import ConnectClientProtocol
from tpot.client.session import TunnelClientProtocol
from tpot.protocol import frames
from tpot.protocol.frames import AUTOBAHN_NAMES, AUTOBAHN_OVERRIDES
from tpot.server.connect import ConnectProtocol
from tpot.server.store import Claim
from tpot.server.tunnel import TunnelProtocol

TPOT = Path(frames.__file__).resolve().parents[1]
CLASSES = {"server": WebSocketServerProtocol, "client": WebSocketClientProtocol}
# Autobahn's documented interface (IWebSocketChannel and friends) and what Twisted gives
# every protocol: anyone may use these.
DOCUMENTED = frozenset(
    name for cls in vars(interfaces).values() if isinstance(cls, type) for name in vars(cls)
) | frozenset(dir(Protocol))


def missing(names):
    assert not names, f"Autobahn {autobahn.__version__} lacks what tpot.protocol.frames relies on: {', '.join(names)}"


@pytest.fixture
def open_ends(clock):  # noqa: F811 (the fixture imported above)
    return {"server": autobahn_server(clock)[0], "client": autobahn_client(clock)[0]}


def autobahn_names(open_ends):
    """Every name an open Autobahn protocol of either end has, on its class or itself."""
    names = set()
    for end, protocol in open_ends.items():
        names |= set(dir(CLASSES[end])) | set(vars(protocol))
    return names


def test_module_level_names_exist():
    absent = []
    for dotted in AUTOBAHN_NAMES["modules"]:
        parts = dotted.split(".")
        # The longest importable prefix is the module; the rest are attributes.
        for split in range(len(parts) - 1, 0, -1):
            try:
                found = importlib.import_module(".".join(parts[:split]))
                break
            except ImportError:
                continue
        else:
            absent.append(dotted)
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute, missing)
            if found is missing:
                absent.append(dotted)
                break
    missing(absent)


@pytest.mark.parametrize("end", ["server", "client"])
def test_methods_exist_on_both_protocol_classes(end):
    cls = CLASSES[end]
    missing([f"{cls.__name__}.{name}" for name in AUTOBAHN_NAMES["methods"] if not callable(getattr(cls, name, None))])


def test_state_exists_on_open_protocols_of_both_ends(open_ends):
    absent = []
    for end, protocol in open_ends.items():
        for name in AUTOBAHN_NAMES["state"] + AUTOBAHN_NAMES[f"{end} state"]:
            if not hasattr(protocol, name):
                absent.append(f"{CLASSES[end].__name__} (open).{name}")
    missing(absent)


def test_factory_attributes_exist():
    factories = [WebSocketServerFactory("ws://localhost"), WebSocketClientFactory("ws://localhost")]
    missing([f"{type(factory).__name__}.{name}" for factory in factories for name in AUTOBAHN_NAMES["factory"]
             if not hasattr(factory, name)])


def test_what_tpot_overrides_exists_in_autobahn(open_ends):
    # An override of a name Autobahn no longer has is dead code that nobody calls.
    missing(sorted(AUTOBAHN_OVERRIDES - autobahn_names(open_ends)))


def tpot_protocols():
    clock = MemoryReactorClock()
    return [
        TunnelProtocol(Claim("name", "lease", "token"), None, None, clock),
        ConnectProtocol(None, "name", clock),
        TunnelClientProtocol(),
        ConnectClientProtocol(),
    ]


def test_tpot_protocols_replace_none_of_autobahns_names_unawares(open_ends):
    autobahn_has = autobahn_names(open_ends)
    bare = set(vars(WebSocketServerProtocol())) | set(vars(WebSocketClientProtocol()))
    clashes = []
    for protocol in tpot_protocols():
        ours = set(vars(protocol)) - bare  # what tpot's constructors set
        for cls in type(protocol).__mro__:
            if cls.__module__.startswith("tpot."):
                ours |= {name for name in vars(cls) if not name.startswith("__")}
        clashes += [f"{type(protocol).__name__}.{name}" for name in sorted(ours & autobahn_has - AUTOBAHN_OVERRIDES)]
    assert not clashes, f"tpot's protocols replace Autobahn's own names (rename them): {', '.join(clashes)}"


def test_only_frames_uses_autobahn_internals(open_ends):
    """A heuristic on the source: attributes of self/protocol/websocket in the modules that
    import Autobahn, against what an Autobahn protocol has and is not documented."""
    internal = autobahn_names(open_ends) - DOCUMENTED - AUTOBAHN_OVERRIDES
    listed = set(AUTOBAHN_NAMES["state"] + AUTOBAHN_NAMES["server state"] + AUTOBAHN_NAMES["client state"]
                 + AUTOBAHN_NAMES["methods"])
    # Public-looking hooks (dropConnection, failHandshake) may be overridden anywhere;
    # underscored ones and Autobahn's state only in frames.py.
    elsewhere = {name for name in AUTOBAHN_OVERRIDES if not name.startswith("_")}
    found = []
    for path in sorted(TPOT.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if "autobahn" not in source:
            continue
        used = set(re.findall(r"\b(?:self|protocol|websocket)\.([A-Za-z_]\w*)", source))
        used |= set(re.findall(r"""getattr\(\s*(?:self|protocol)\s*,\s*["'](\w+)["']""", source))
        name = path.relative_to(TPOT.parent).as_posix()
        if name == "tpot/protocol/frames.py":
            found += [f"{name}: {attribute} (not in AUTOBAHN_NAMES)" for attribute in sorted(used & internal - listed)]
        else:
            found += [f"{name}: {attribute}" for attribute in sorted(used & (internal | listed) - elsewhere)]
    assert not found, f"Autobahn internals used outside frames.AUTOBAHN_NAMES' helpers: {'; '.join(found)}"
