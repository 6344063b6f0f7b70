"""The status area on a terminal, as ngrok's console shows it: session status, server,
latency, where traffic goes, the inspector, connection and request counts, and the last
requests below them.

A thin adapter: the numbers are tpot.client.stats's, the lines tpot.client.requestlog's,
the drawing rich's Live display (redrawn in place below whatever is printed, the cursor
hidden until it stops).  It is the runs' request log (`write`, `write_connection`) and
meter (`opened`, `closed`); what the runs print on stdout, and on stderr when that is the
same terminal, goes through `above`, so that messages are printed above the area instead
of being drawn over.  Everything runs in the reactor's thread: the area is redrawn by a
LoopingCall, not by rich's own refresh thread.
"""

from rich.console import Console as RichConsole
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from twisted.internet import task

from tpot.client.requestlog import ConnectionEntry, arrow_for, format_connection, format_duration, format_entry
from tpot.client.stats import TrafficStats
from tpot.protocol.codec import TCP

REFRESH_INTERVAL = 0.5
MAX_PARTIAL_LINE = 4096  # a write without a newline is shown once this long, not kept growing
# The lines of the area besides the status rows and the requests: the heading, the blank
# lines, the requests' title, and one left for the cursor below the area.
OTHER_LINES = 5


class Console:
    def __init__(self, reactor, out):
        self.reactor = reactor
        self.stats = TrafficStats()
        self.runs = []  # (label, ClientRun); the label names the tunnel when there are several
        self.terminal = RichConsole(file=out, highlight=False)
        self.live = Live(console=self.terminal, auto_refresh=False, transient=False)
        self.arrow = arrow_for(out)
        self.above = _Above(self)
        self._refreshing = task.LoopingCall(self.refresh)
        self._refreshing.clock = reactor
        self._started = False
        self._stopped = False

    def add(self, run, label=None):
        self.runs.append((label, run))

    # The runs' request log and meter.

    def write(self, entry):
        self.stats.request(entry, self.reactor.seconds())

    def write_connection(self, entry):
        self.stats.connection(entry)

    def opened(self):
        self.stats.opened()

    def closed(self):
        self.stats.closed()

    # Drawing.

    def start(self):
        self.live.update(self.render())
        self.live.start()
        self._started = True
        self._refreshing.start(REFRESH_INTERVAL)

    def refresh(self):
        self.live.update(self.render(), refresh=True)

    def stop(self):
        """Draw the last state and give the terminal back (the cursor shown again)."""
        if not self._started:
            return
        self._started = False
        self._stopped = True
        if self._refreshing.running:
            self._refreshing.stop()
        self.live.update(self.render())
        self.live.stop()

    def restore_cursor(self):
        """For a process about to end at once (a second Ctrl-C): no drawing, the cursor back."""
        self.terminal.show_cursor(True)

    def print_above(self, line):
        # Soft wrap: a long line (tpot tcp's connect command) is wrapped by the terminal,
        # so that it is copied whole, without a newline inserted.
        self.terminal.print(Text(line), soft_wrap=True)
        if self._started:
            self.live.refresh()

    def render(self):
        rows = self.status_rows()
        status = Table.grid(padding=(0, 2))
        status.add_column(style="bold", no_wrap=True)
        status.add_column(no_wrap=True, overflow="ellipsis")
        for label, value in rows:
            # Text, not str: rich reads a str as markup, and the tunnel's name comes from
            # the server ("[link=...]" would make a link, "[/]" an error).
            status.add_row(Text(label), Text(value))
        # As many of the last requests as fit: the area never scrolls the terminal.
        lines = self._recent_lines(self.terminal.size.height - len(rows) - OTHER_LINES)
        title = "TCP connections" if self._tcp_only() else "HTTP requests"
        heading = Text("tpot", style="bold")
        heading.append("  (Ctrl+C to quit)", style="dim")
        return Group(heading, Text(""), status, Text(""), Text(title, style="bold"), *lines)

    def status_rows(self):
        """(label, value) of each row of the status, as text."""
        now = self.reactor.seconds()
        stats = self.stats
        rows = [("Session Status", self._session_status())]
        if self.runs:
            rows.append(("Server", self.runs[0][1].server_url()))
        rows.append(("Latency", self._latency()))
        width = max((len(label) for label, _ in self.runs if label), default=0)
        for i, (label, run) in enumerate(self.runs):
            where = run.forwarding() if run.name is not None else f"(waiting) -> {run.target_address()}"
            rows.append(("Forwarding" if i == 0 else "", f"{label:<{width}}  {where}" if label else where))
        inspector = self._inspector_url()
        if inspector is not None:
            rows.append(("Inspector", inspector))
        rows.append(("Connections", f"total {stats.connections_total}  open {stats.connections_open}"))
        if self._tcp_only():
            return rows
        p50, p90 = (stats.percentile(fraction) for fraction in (0.5, 0.9))
        times = f"  p50 {format_duration(p50)}  p90 {format_duration(p90)}" if p50 is not None else ""
        rows.append(("Requests", f"total {stats.requests_total}  {stats.requests_per_minute(now):.0f}/min{times}"))
        return rows

    def _tcp_only(self):
        return all(run.settings.kind == TCP for _, run in self.runs)

    def _session_status(self):
        if self._stopped:
            return "stopped"
        down = [(label, run.status) for label, run in self.runs if run.status != "online"]
        if not down:
            return "online"
        word = "reconnecting" if any(status == "reconnecting" for _, status in down) else "connecting"
        named = [label for label, _ in down if label]
        return f"{word} ({', '.join(named)})" if named else word

    def _latency(self):
        measured = [run.round_trips.latest for _, run in self.runs
                    if run.round_trips is not None and run.round_trips.latest is not None]
        return format_duration(max(measured)) if measured else "-"

    def _inspector_url(self):
        for _, run in self.runs:
            if run.inspector is not None and run.inspector.port is not None:
                return run.inspector.url
        return None

    def _recent_lines(self, room):
        if room <= 0:
            return []
        entries = list(self.stats.recent)[-room:]
        return [Text.from_ansi(self._line(entry)) for entry in entries]

    def _line(self, entry):
        if isinstance(entry, ConnectionEntry):
            return format_connection(entry, self.arrow)
        return format_entry(entry, colour=True, arrow=self.arrow)


class _Above:
    """A text stream whose lines are printed above the status area."""

    encoding = "utf-8"

    def __init__(self, console):
        self.console = console
        self._partial = ""

    def write(self, text):
        *lines, self._partial = (self._partial + text).split("\n")
        if len(self._partial) > MAX_PARTIAL_LINE:
            lines.append(self._partial)
            self._partial = ""
        for line in lines:
            self.console.print_above(line)

    def flush(self):
        pass

