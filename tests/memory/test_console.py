"""The status area (tpot.client.console) as text: a real ClientRun on a memory reactor tells
it its state (greeted and dropped through its factory, as the WebSocket reports), the
console is fed requests and connections as a tunnel's conversations feed it, and what it
would draw is rendered into a string, without a terminal."""

import io

import pytest
from rich.console import Console as RichConsole
from twisted.internet.testing import MemoryReactorClock

from tpot.client.console import MAX_PARTIAL_LINE, Console
from tpot.client.requestlog import ConnectionEntry, Entry
from tpot.client import runner
from tpot.client.runner import ClientRun
from tpot.client.settings import client_settings
from tpot.protocol.codec import TCP


def screen(console, height=40):
    """What the area draws on a 120 x `height` terminal."""
    console.terminal.size = (120, height)
    out = io.StringIO()
    RichConsole(file=out, width=120, height=height, color_system=None).print(console.render())
    return out.getvalue()


def rows(console):
    return dict(console.status_rows())


def started(monkeypatch, target="8000", **options):
    clock = MemoryReactorClock()
    out = io.StringIO()
    console = Console(clock, out)
    run = run_on(monkeypatch, console, clock, target, **options)
    return clock, console, run, out


def run_on(monkeypatch, console, clock, target, name="demo", label=None, **options):
    """A started ClientRun shown on `console`, its connection attempt not made (the test reports its outcome)."""
    monkeypatch.setattr(runner, "connect_tcp", lambda reactor, host, port, factory, tls=None: None)
    clock.running = True
    run = ClientRun(client_settings(target, server="http://localhost:3000", subdomain=name, **options), clock,
                    out=console.above, err=console.above, console=console, label=label)
    run.start()
    return run


def test_before_the_greeting_it_says_connecting_and_where_traffic_will_go(monkeypatch):
    _, console, _, _ = started(monkeypatch, "https://localhost:8443")
    assert rows(console)["Session Status"] == "connecting"
    assert rows(console)["Forwarding"] == "(waiting) -> https://localhost:8443"
    assert rows(console)["Latency"] == "-"


def test_once_online_it_shows_the_forwarding_line_and_the_announcement_is_printed_above(monkeypatch):
    _, console, run, out = started(monkeypatch)
    run.factory.greeted("demo")
    assert rows(console)["Session Status"] == "online"
    assert rows(console)["Server"] == "http://localhost:3000"
    assert rows(console)["Forwarding"] == "http://demo.localhost:3000 -> http://localhost:8000"
    assert out.getvalue().splitlines() == [
        "tpot connected", "http://demo.localhost:3000", "Forwarding http://demo.localhost:3000 -> http://localhost:8000"]


def test_counts_rate_and_percentiles_from_what_conversations_report(monkeypatch):
    clock, console, run, _ = started(monkeypatch)
    run.factory.greeted("demo")
    for i in range(4):
        console.opened()
        clock.advance(0.5)
        console.write(Entry("GET", f"/page{i}", 200, 2, (i + 1) / 1000))
    console.closed()
    assert rows(console)["Connections"] == "total 4  open 3"
    assert rows(console)["Requests"] == "total 4  4/min  p50 2 ms  p90 4 ms"
    text = screen(console)
    assert "GET /page0 → 200  2 B  1 ms" in text and "GET /page3 → 200  2 B  4 ms" in text
    assert text.index("Session Status") < text.index("HTTP requests") < text.index("GET /page0")


def test_a_reconnecting_tunnel_says_so(monkeypatch):
    _, console, run, _ = started(monkeypatch)
    run.factory.greeted("demo")
    run.factory.closed(None, 1006, None)
    assert rows(console)["Session Status"] == "reconnecting"


def test_only_the_last_requests_that_fit_are_drawn(monkeypatch):
    _, console, run, _ = started(monkeypatch)
    run.factory.greeted("demo")
    for i in range(200):
        console.write(Entry("GET", f"/r{i}", 200, 0, 0.001))
    text = screen(console, height=24)
    assert "/r199 " in text and "/r150 " not in text
    assert len(text.splitlines()) == 23  # the terminal but one line: the area never scrolls it
    assert len(console.stats.recent) == 100  # bounded whatever the terminal


def test_a_tcp_tunnel_lists_its_connections(monkeypatch):
    _, console, run, _ = started(monkeypatch, "22", kind=TCP, access_secret="S3cret-" * 6)
    run.factory.greeted("db")
    console.write_connection(ConnectionEntry("127.0.0.1:5000", "closed", 1024, 2048, 1.5))
    assert rows(console)["Forwarding"] == "TCP tunnel db on http://localhost:3000 -> localhost:22"
    text = screen(console)
    assert "TCP connections" in text and "TCP 127.0.0.1:5000 → closed  1.0 KiB in  2.0 KiB out  1500 ms" in text
    assert "Requests" not in rows(console)  # a TCP tunnel has none


def test_control_characters_from_the_server_do_not_reach_the_screen(monkeypatch):
    _, console, run, _ = started(monkeypatch)
    run.factory.greeted("x\x1b]0;pwned\x07")
    console.write(Entry("GET", "/\x1b[2J", 200, 0, 0.001))
    text = screen(console)
    assert "\x1b" not in text and "\x07" not in text


@pytest.mark.parametrize("name", ["x[/]y", "[link=https://evil.example]x", "[blink]x"])
def test_markup_in_a_name_from_the_server_is_shown_as_text(monkeypatch, name):
    _, console, run, _ = started(monkeypatch)
    run.factory.greeted(name)
    out = io.StringIO()
    RichConsole(file=out, width=200, height=40, force_terminal=True, color_system="truecolor").print(console.render())
    text = out.getvalue()
    assert f"http://{name}.localhost:3000" in text
    assert "\x1b]8;" not in text and "\x1b[5m" not in text  # no hyperlink, no blinking


def test_a_stopped_console_says_stopped(monkeypatch):
    _, console, run, _ = started(monkeypatch)
    run.factory.greeted("demo")
    console.stop()  # never started: nothing drawn
    assert rows(console)["Session Status"] == "online"
    console.start()
    console.stop()
    assert rows(console)["Session Status"] == "stopped"


def test_several_tunnels_have_a_forwarding_row_each_and_the_status_names_those_down(monkeypatch):
    clock = MemoryReactorClock()
    console = Console(clock, io.StringIO())
    runs = [run_on(monkeypatch, console, clock, target, name, label=name) for name, target in (("web", "8000"), ("apis", "8001"))]
    runs[0].factory.greeted("web")
    assert rows(console)["Session Status"] == "connecting (apis)"
    runs[1].factory.greeted("apis")
    assert rows(console)["Session Status"] == "online"
    forwarding = [value for label, value in console.status_rows() if label in ("Forwarding", "")]
    assert forwarding == ["web   http://web.localhost:3000 -> http://localhost:8000",
                          "apis  http://apis.localhost:3000 -> http://localhost:8001"]  # aligned


def test_a_long_line_printed_above_is_not_broken_by_inserted_newlines(monkeypatch):
    _, console, _, out = started(monkeypatch)
    command = "connect with: tpot connect db -t http://localhost:3000 --secret " + "S" * 150
    console.above.write(command + "\n")
    assert out.getvalue() == command + "\n"  # the terminal wraps it; a copy is one line


def test_text_written_in_pieces_is_printed_by_whole_lines_and_a_line_without_end_is_bounded(monkeypatch):
    _, console, _, out = started(monkeypatch)
    console.above.write("tpot: a warning ")
    assert out.getvalue() == ""
    console.above.write("in two pieces\nand the start of ")
    assert out.getvalue() == "tpot: a warning in two pieces\n"
    console.above.write("x" * (MAX_PARTIAL_LINE + 1))
    assert out.getvalue().endswith("and the start of " + "x" * (MAX_PARTIAL_LINE + 1) + "\n")
    assert console.above._partial == ""
