"""The client runs without the server: no tpot.client module imports tpot.server, and the
settings stay pure (no Twisted, no OpenSSL)."""

import json
import pkgutil
import subprocess
import sys

import tpot.client

CLIENT_MODULES = sorted(f"tpot.client.{info.name}" for info in pkgutil.iter_modules(tpot.client.__path__))


def imported_after(modules):
    """The names in sys.modules after a fresh interpreter imports `modules`."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def test_every_client_module_is_found():
    assert {"tpot.client.cli", "tpot.client.conversation", "tpot.client.settings", "tpot.client.tls"} <= set(
        CLIENT_MODULES)


def test_no_client_module_imports_the_server():
    loaded = imported_after(CLIENT_MODULES)
    assert set(CLIENT_MODULES) <= set(loaded)
    assert [name for name in loaded if name == "tpot.server" or name.startswith("tpot.server.")] == []


def test_the_settings_import_neither_twisted_nor_openssl():
    loaded = imported_after(["tpot.client.settings"])
    assert [name for name in loaded if name.split(".")[0] in ("twisted", "OpenSSL", "autobahn")] == []
