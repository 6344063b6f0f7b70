"""`tpot start`: every tunnel of the config file (tpot.client.startfile) in one process,
sharing one inspector, with a table of tunnel -> public address once all are up.

A tunnel that cannot start ends the whole start-up, its message naming it; once all are
up, each reconnects on its own as `tpot http` and `tpot tcp` do.
"""

import dataclasses
import sys

from tpot.client.inspector.service import Inspector, listen_inspector
from tpot.client.runner import ClientRun
from tpot.client.settings import EXIT_FAILURE, EXIT_OK, ClientError
from tpot.protocol.codec import TCP


class StartRun:
    def __init__(self, settings, reactor, out=sys.stdout, err=sys.stderr, tokens=None, console=None):
        self.settings = settings
        self.console = console  # the status area (tpot.client.console) showing every tunnel, or None
        self.tokens = tokens
        self.reactor = reactor
        self.out = out
        self.err = err
        inspected = any(tunnel.kind != TCP for _, tunnel in settings.tunnels)
        self.inspector = Inspector(settings.inspect, reactor) if settings.inspect and inspected else None
        self.runs = []
        self.labels = {}
        self._waiting = set()
        self._failed = False

    @property
    def exit_code(self):
        return max(EXIT_FAILURE if self._failed else EXIT_OK, *(run.exit_code for run in self.runs))

    def start(self):
        if self.inspector is not None and not self._listen_inspector():
            return
        for name, tunnel in self.settings.tunnels:
            # The runs share this process's inspector (or none): they serve none of their own.
            tunnel = dataclasses.replace(tunnel, inspect=None)
            run = ClientRun(tunnel, self.reactor, self.out, _TunnelErrors(self.err, name), inspector=self.inspector,
                            on_online=self._online, tokens=self.tokens, console=self.console, label=name)
            self.runs.append(run)
            self.labels[id(run)] = name
            self._waiting.add(id(run))
        for run in self.runs:
            run.start()

    def _listen_inspector(self):
        try:
            serving = listen_inspector(self.inspector, self.err)
        except ClientError as error:
            self.err.write(f"tpot: {error}\n")
            self.err.flush()
            self._failed = True
            self.reactor.stop()
            return False
        if not serving:
            self.inspector = None
        return True

    def _online(self, run):
        self._waiting.discard(id(run))
        if not self._waiting:
            self.out.write(self.table())
            self.out.flush()

    def table(self):
        width = max(len(name) for name in self.labels.values())
        lines = [f"tpot started {len(self.runs)} tunnel{'s' if len(self.runs) != 1 else ''}"]
        for run in self.runs:
            lines.append(f"  {self.labels[id(run)]:<{width}}  {run.forwarding()}")
        for run in self.runs:
            if run.settings.kind == TCP:
                lines.append(f"{self.labels[id(run)]}: connect with: {run.connect_command()}")
        if self.inspector is not None:
            lines.append(f"inspector: {self.inspector.url}")
        return "\n".join(lines) + "\n"


class _TunnelErrors:
    """stderr for one tunnel's run: its messages say which tunnel they are about."""

    def __init__(self, err, name):
        self.err = err
        self.name = name

    def write(self, text):
        if text.strip():
            text = text[len("tpot: "):] if text.startswith("tpot: ") else text
            self.err.write(f"tpot: tunnel {self.name}: {text}")

    def flush(self):
        self.err.flush()
