"""The modules that say they are pure (sans-I/O) are: each imports, in a fresh interpreter,
with Twisted, Autobahn, txaio and pyOpenSSL made unimportable (zope.interface stays: an
interface declaration is no I/O, and the seams a cluster shares are declared there) and with
every way of opening a file or a socket failing while it is imported; and nowhere in its
source (function bodies included, where a lazy import would hide) does it import those,
call open() or print(), or read os.environ.

PURE is the one list of them.  A module whose docstring says pure, sans-I/O or free of I/O
is either in PURE or in NOT_PURE with the reason; keep them in step with the docstrings.
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PURE = (
    "tpot.protocol.codec",
    "tpot.protocol.names",
    "tpot.protocol.auth",
    "tpot.protocol.session",
    "tpot.protocol.budget",
    "tpot.http.head",
    "tpot.http.framing",
    "tpot.http.rewrite",
    "tpot.http.responses",
    "tpot.http.addresses",
    "tpot.server.requests",
    "tpot.server.startup",
    "tpot.server.cluster.hop",
    "tpot.server.cluster.link",
    "tpot.client.policy",
    "tpot.client.requestlog",
    "tpot.client.stats",
    "tpot.client.settings",
    "tpot.client.startfile",
    "tpot.client.explain",
    "tpot.client.health",
    "tpot.client.inspector.capture",
    "tpot.client.inspector.guard",
    "tpot.client.inspector.present",
    "tpot.client.inspector.views",
)

# Docstrings that mention purity, for modules that are not (wholly) pure.
NOT_PURE = {
    "tpot.protocol.frames": "its functions are pure, but it is also the home of the Autobahn mixin LeanFrames",
    "tpot.server.authenticator": "says tpot.protocol.auth holds the pure parts; it runs the KDF in Twisted's thread pool",
    "tpot.client.connect": "says only connect_settings parses purely; ConnectRun is the Twisted part",
    "tpot.client.files": "the file reading the pure tpot.client.settings leaves to its callers",
    "tpot.client.inspector.replay": "says replayed_request is pure; replay sends it over a Twisted connection",
}

BLOCKED = ("twisted", "autobahn", "txaio", "OpenSSL")

# Run in the child: block the frameworks, make file and socket opening raise, import the
# module, and report what it pulled in.
CHILD = r'''
import builtins, importlib, io, os, socket, sys

BLOCKED = {blocked!r}

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: this module claims to be pure")
        return None

sys.meta_path.insert(0, Blocker())

def refuse(what):
    def refused(*args, **kwargs):
        raise AssertionError(f"{{what}}{{args!r}} at import time")
    return refused

saved = builtins.open, io.open, os.open, socket.socket
builtins.open = io.open = refuse("open")
os.open = refuse("os.open")
socket.socket = refuse("socket.socket")
try:
    importlib.import_module({module!r})
finally:
    builtins.open, io.open, os.open, socket.socket = saved
leaked = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
assert not leaked, leaked
print("pure")
'''


def start_import(module):
    """A fresh interpreter (-S: no site-packages, so nothing but the stdlib and the checkout)
    importing `module` under CHILD's rules."""
    code = f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + CHILD.format(blocked=BLOCKED, module=module)
    return subprocess.Popen([sys.executable, "-S", "-c", code], cwd=str(REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def import_in_isolation(module):
    proc = start_import(module)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def isolated_imports():
    """Every PURE module imported in its own interpreter, all at once."""
    started = {module: start_import(module) for module in PURE}
    results = {}
    for module, proc in started.items():
        stdout, stderr = proc.communicate(timeout=60)
        results[module] = (proc.returncode, stdout, stderr)
    return results


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_without_frameworks_or_io(module, isolated_imports):
    returncode, stdout, stderr = isolated_imports[module]
    assert returncode == 0 and stdout == "pure\n", stderr[-2000:]


def impurities(module):
    """Where the source of `module` imports a framework, opens a file, prints or reads the
    environment: (line, what) pairs."""
    import ast

    tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] in BLOCKED]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in BLOCKED:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("open", "print"):
            found.append((node.lineno, f"{node.func.id}()"))
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and (node.value.id, node.attr) in (("os", "environ"), ("os", "getenv"))):
            found.append((node.lineno, f"os.{node.attr}"))
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_module_source_does_no_io_and_imports_no_framework_even_lazily(module):
    assert impurities(module) == []


def test_the_checks_catch_an_impure_module():
    # The controls: a module that needs Twisted fails the import check, and one that opens
    # files and imports Twisted inside a function fails the source check.
    result = import_in_isolation("tpot.protocol.flow")
    assert result.returncode != 0 and "twisted" in result.stderr and "is blocked" in result.stderr, result.stderr
    found = {what for module in ("tpot.client.files", "tpot.client.tls", "tpot.client.cli")
             for _, what in impurities(module)}
    assert {"open()", "os.environ"} <= found and any(what.startswith("twisted") for what in found), found


def test_every_module_whose_docstring_says_pure_is_listed():
    import ast

    words = ("pure", "sans-i/o", "free of i/o")
    claims = set()
    for path in (REPO / "tpot").rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        docstring = (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").lower()
        if any(word in docstring for word in words):
            claims.add(module)
    assert claims == set(PURE) | set(NOT_PURE)
    assert not set(PURE) & set(NOT_PURE)
