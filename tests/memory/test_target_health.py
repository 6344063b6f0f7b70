"""A target that is not there, through the client's real tunnel protocol and target
connector on a memory reactor: the visitor's request is logged as a 502 with the reason,
and stderr says once that the target is down, and once that it answers again."""

from tests.memory.test_session import Client, data, opened, signal
from tests.support.memory import settle

REQUEST = b"GET /x HTTP/1.1\r\nHost: wire.localhost:3000\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
DOWN = "tpot: the target localhost:8080 is not answering (connection refused); visitors get 502 until it is."


def greeted(clock, **options):
    client = Client(clock, **options)
    client.answer_upgrade()
    client.server_sends(b"\x11GTPoT/1 wire")
    client.messages()
    return client


def visit(client, conversation_id, request=REQUEST):
    client.server_sends(opened(conversation_id))
    client.server_sends(data(conversation_id, request))


def test_a_refused_target_is_a_502_per_request_and_one_warning(clock, capsys):
    client = greeted(clock, log=True)
    for conversation_id in (1, 2, 3):
        visit(client, conversation_id)
        client.refuse_target()
        assert client.messages() == [signal(conversation_id, b"N")]
    # refuse_target lets HostnameEndpoint's 0.3 s attempt tick pass.
    assert client.out.getvalue().splitlines() == ["GET /x → 502 target unreachable (connection refused)  300 ms"] * 3
    assert capsys.readouterr().err == DOWN + "\n"

    visit(client, 4)
    target = client.connect_target()
    assert target.value() == REQUEST.replace(b"wire.localhost:3000", b"localhost:8080")
    target.receive(OK)
    settle(clock)
    assert client.out.getvalue().splitlines()[-1] == "GET /x → 200  2 B  0 ms"
    assert capsys.readouterr().err == "tpot: the target localhost:8080 answers again.\n"


def test_pipelined_requests_behind_the_502_are_logged_as_unanswered(clock, capsys):
    client = greeted(clock, log=True)
    visit(client, 1, REQUEST + REQUEST.replace(b"/x", b"/y"))
    client.refuse_target()
    assert client.out.getvalue().splitlines() == [
        "GET /x → 502 target unreachable (connection refused)  300 ms",
        "GET /y → no response (the connection closed)  300 ms",
    ]


def test_quiet_logs_no_502_but_still_warns(clock, capsys):
    client = greeted(clock, log=False)
    visit(client, 1)
    client.refuse_target()
    assert client.messages() == [signal(1, b"N")]
    assert client.out.getvalue() == ""
    assert capsys.readouterr().err == DOWN + "\n"


def test_a_target_that_closes_before_answering_is_logged_as_no_response(clock, capsys):
    client = greeted(clock, log=True)
    visit(client, 1)
    target = client.connect_target()
    target.peer_closes()
    settle(clock)
    assert client.messages() == [signal(1, b"X")]  # the server closes the visitor's connection: no 502
    assert client.out.getvalue().splitlines() == ["GET /x → no response (the connection closed)  0 ms"]
    assert capsys.readouterr().err == ""  # it answered the connection: not down
