"""Server settings (tpot.server.config) and client settings (tpot.client.settings, the command line,
the inspector's options)."""

import json
import re
import socket

import pytest
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString

from tpot.client import cli
from tpot.client.cli import parse_command_line
from tpot.client.files import read_config_file
from tpot.client.target import name_resolves
from tpot.client.settings import (
    DEFAULT_INSPECT_KEEP,
    INSPECT_PORTS,
    Address,
    ClientError,
    InspectSettings,
    client_settings,
    inspect_settings,
    parse_address,
)
from tpot.server.config import (
    DEFAULT_PORT,
    DUAL_STACK,
    IPV6_ONLY,
    NO_IPV6,
    ConfigError,
    ServerSettings,
    default_listen,
    environment,
    ip_stack,
    parse_port,
    server_settings,
    worker_settings,
)

KEY = "k" * 32


def assert_one_sentence(message):
    assert message.endswith(".") and "\n" not in message, message
    assert re.search(r"[.!?]\s+[A-Z]", message[:-1]) is None, message


# Server settings.


def test_defaults():
    assert server_settings(domain="localhost", env={}) == ServerSettings("localhost", None, default_listen(DEFAULT_PORT))


def test_everything_from_the_environment():
    env = {"DOMAIN": "tunnel.example", "AUTH_KEY": KEY, "PORT": "8080"}
    assert server_settings(env=env) == ServerSettings("tunnel.example", KEY, default_listen(8080))


def test_arguments_win_over_the_environment():
    env = {"DOMAIN": "env.example", "AUTH_KEY": "e" * 40, "PORT": "8080"}
    settings = server_settings(domain="arg.example", auth_key=KEY, port=9000, env=env)
    assert settings == ServerSettings("arg.example", KEY, default_listen(9000))


DUAL = r"tcp6:3000:interface=\:\::backlog=1024"
IPV4 = "tcp:3000:backlog=1024"
# What Twisted makes of them: every IPv6 address, every IPv4 one.
ENDPOINTS = {DUAL: (TCP6ServerEndpoint, "::", 1024), IPV4: (TCP4ServerEndpoint, "", 1024)}


@pytest.mark.parametrize("stack, listen", [(DUAL_STACK, [DUAL]), (IPV6_ONLY, [DUAL, IPV4]), (NO_IPV6, [IPV4])])
def test_default_listen_is_ipv6_and_ipv4_where_the_system_has_both(stack, listen):
    assert default_listen(3000, stack) == listen
    for description in listen:
        endpoint = serverFromString(None, description)
        assert (type(endpoint), endpoint._interface, endpoint._backlog) == ENDPOINTS[description]


def test_this_system_listens_dual_stack():
    # Linux's default (net.ipv6.bindv6only=0), which the end-to-end tests rely on too.
    assert ip_stack() == DUAL_STACK
    assert server_settings(domain="localhost", env={}).listen == [DUAL]


def test_without_ipv6_the_server_listens_on_ipv4(monkeypatch):
    monkeypatch.setattr(socket, "has_ipv6", False)
    assert ip_stack() == NO_IPV6
    assert server_settings(domain="localhost", env={}).listen == [IPV4]


def test_an_ipv6_socket_that_cannot_be_made_means_no_ipv6(monkeypatch):
    def refuse(family=socket.AF_INET, *args):
        raise OSError(97, "Address family not supported by protocol")

    monkeypatch.setattr(socket, "socket", refuse)
    assert ip_stack() == NO_IPV6


@pytest.mark.parametrize("domain", ["Tunnel.Example", "tunnel.example.", "  tunnel.example  ", "TUNNEL.EXAMPLE."])
def test_domain_is_normalised(domain):
    assert server_settings(domain=domain, env={}).domain == "tunnel.example"


@pytest.mark.parametrize("kwargs, env", [({}, {}), ({}, {"DOMAIN": ""}), ({"domain": "  "}, {}), ({"domain": "."}, {})])
def test_missing_domain(kwargs, env):
    with pytest.raises(ConfigError) as error:
        server_settings(env=env, **kwargs)
    assert "DOMAIN" in str(error.value)
    assert_one_sentence(str(error.value))


@pytest.mark.parametrize("kwargs, env", [({"auth_key": "k" * 31}, {}), ({}, {"AUTH_KEY": "short"}),
                                         ({"auth_key": "k" * 31}, {"AUTH_KEY": KEY})])
def test_short_auth_key(kwargs, env):
    with pytest.raises(ConfigError) as error:
        server_settings(domain="localhost", env=env, **kwargs)
    assert "AUTH_KEY" in str(error.value) and "32" in str(error.value)
    assert_one_sentence(str(error.value))


def test_empty_auth_key_in_the_environment_means_no_key():
    assert server_settings(domain="localhost", env={"AUTH_KEY": ""}).auth_key is None


def test_auth_key_of_exactly_32_characters_is_accepted():
    assert server_settings(domain="localhost", auth_key=KEY, env={}).auth_key == KEY


@pytest.mark.parametrize("port", ["0", "65536", "abc", "", "-1", "80.5", "1e3", "0x50", "²", 0, 70000])
@pytest.mark.parametrize("where", ["argument", "env"])
def test_bad_port(port, where):
    kwargs, env = ({"port": port}, {}) if where == "argument" else ({}, {"PORT": str(port)})
    with pytest.raises(ConfigError) as error:
        server_settings(domain="localhost", env=env, **kwargs)
    assert "PORT" in str(error.value)
    assert_one_sentence(str(error.value))


@pytest.mark.parametrize("port, number", [("1", 1), ("65535", 65535), (" 3000 ", 3000), (443, 443), ("08080", 8080)])
def test_good_port(port, number):
    assert parse_port(port) == number


def test_listen_replaces_port():
    listen = ["tcp:8080:interface=127.0.0.1", "unix:/tmp/tpot.sock"]
    settings = server_settings(domain="localhost", port=9000, listen=listen, env={"PORT": "abc"})
    assert settings.listen == listen


def test_dotenv_file_is_read_and_the_process_environment_wins(tmp_path, monkeypatch):
    path = tmp_path / ".env"
    path.write_text(f"DOMAIN=file.example\nAUTH_KEY={KEY}\nPORT=4000\nTPOT_TEST_ONLY=from-file\nBARE\n")
    for name in ("DOMAIN", "AUTH_KEY", "PORT", "TPOT_TEST_ONLY", "BARE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORT", "5000")
    env = environment(str(path))
    assert env["DOMAIN"] == "file.example" and env["AUTH_KEY"] == KEY and env["TPOT_TEST_ONLY"] == "from-file"
    assert env["PORT"] == "5000"
    assert "BARE" not in env
    assert server_settings(env=env) == ServerSettings("file.example", KEY, default_listen(5000))


def test_missing_dotenv_file_gives_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TPOT_TEST_ONLY", "from-process")
    env = environment(str(tmp_path / "missing.env"))
    assert env["TPOT_TEST_ONLY"] == "from-process"


def test_server_settings_reads_dotenv_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("DOMAIN=cwd.example\nPORT=4321\n")
    for name in ("DOMAIN", "AUTH_KEY", "PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert server_settings() == ServerSettings("cwd.example", None, default_listen(4321))


# Client addresses.


@pytest.mark.parametrize(
    "text, address",
    [
        ("8080", Address("http", "localhost", 8080, "localhost:8080")),
        ("localhost:8080", Address("http", "localhost", 8080, "localhost:8080")),
        ("http://127.0.0.1:9000", Address("http", "127.0.0.1", 9000, "127.0.0.1:9000")),
        ("http://127.0.0.1:9000/", Address("http", "127.0.0.1", 9000, "127.0.0.1:9000")),
        ("example.com", Address("http", "example.com", 80, "example.com")),
        ("HTTP://Example.com", Address("http", "Example.com", 80, "Example.com")),
        ("https://tunnel.example", Address("https", "tunnel.example", 443, "tunnel.example")),
        ("https://tunnel.example:8443", Address("https", "tunnel.example", 8443, "tunnel.example:8443")),
        ("[::1]:8080", Address("http", "::1", 8080, "[::1]:8080")),
        ("http://[::1]", Address("http", "::1", 80, "[::1]")),
        ("  8080  ", Address("http", "localhost", 8080, "localhost:8080")),
    ],
)
def test_parse_address(text, address):
    assert parse_address(text, "target") == address


@pytest.mark.parametrize(
    "text",
    ["", None, "http://", "ftp://x", "x:0", "x:65536", "x:123456", "localhost:", "http://x/path", "x y",
     "user@host:80", "http://x?y", "[::1", "0"],
)
def test_bad_address(text):
    with pytest.raises(ClientError) as error:
        parse_address(text, "target")
    assert "target" in str(error.value)
    assert_one_sentence(str(error.value))


# Client settings.


def settings(target="8080", env=None, config=None, **kwargs):
    return client_settings(target, env={} if env is None else env, config={} if config is None else config, **kwargs)


SERVER = "http://localhost:3000"


@pytest.mark.parametrize(
    "target, host_with_port",
    [("8080", "localhost:8080"), ("localhost:8080", "localhost:8080"), ("http://127.0.0.1:9000", "127.0.0.1:9000")],
)
def test_targets(target, host_with_port):
    result = settings(target, server=SERVER)
    assert result.target.host_with_port == host_with_port
    assert result.host_rewrite == host_with_port


def test_https_target_is_accepted():
    # More on https targets in tests/test_https_target.py.
    result = settings("https://x", server=SERVER)
    assert result.target == Address("https", "x", 443, "x")
    assert result.host_rewrite == "x"


# A bare word: a host name on port 80 only if it resolves (`tpot http notaport` is a typo).

NOT_A_TARGET = ("The target {!r} is neither a port number nor a host name that resolves;"
                " give a port (8080), host:port or a URL.")


@pytest.mark.parametrize("target", ["notaport", "notaport.invalid", "My-App"])
def test_a_bare_word_that_does_not_resolve_is_refused_in_one_sentence(target):
    with pytest.raises(ClientError) as refused:
        settings(target, server=SERVER, resolves=lambda name: False)
    assert str(refused.value) == NOT_A_TARGET.format(target)
    assert_one_sentence(str(refused.value))


def test_a_bare_word_that_resolves_is_a_host_on_port_80():
    result = settings("myhost", server=SERVER, resolves={"myhost"}.__contains__)
    assert result.target == Address("http", "myhost", 80, "myhost")


@pytest.mark.parametrize("target", ["8080", "localhost", "127.0.0.1", "myhost:8080", "http://myhost",
                                    "https://myhost", "[::1]:8080", "http://[::1]"])
def test_only_a_bare_word_other_than_localhost_is_looked_up(target):
    asked = []
    settings(target, server=SERVER, resolves=lambda name: asked.append(name) or False)
    assert asked == []


def test_names_are_resolved_for_real():
    assert name_resolves("localhost")
    assert not name_resolves("notaport.invalid")  # RFC 6761: never resolves, online or not


def test_the_command_line_refuses_a_bare_word_that_does_not_resolve(home, capsys):
    assert parse_command_line(["http", "localhost", "-t", SERVER]).target.port == 80
    assert cli.main(["http", "notaport.invalid", "-t", SERVER]) == 1
    assert capsys.readouterr().err == "tpot: " + NOT_A_TARGET.format("notaport.invalid") + "\n"


@pytest.mark.parametrize(
    "server, subdomain, websocket_url, public_url",
    [
        ("http://localhost:3000", None, "ws://localhost:3000/create-tpot", "http://abc.localhost:3000"),
        ("http://localhost:3000", "Demo", "ws://localhost:3000/create-tpot?subdomain=demo", "http://abc.localhost:3000"),
        ("https://tunnel.example", "demo", "wss://tunnel.example/create-tpot?subdomain=demo", "https://abc.tunnel.example"),
        ("https://tunnel.example:8443/", None, "wss://tunnel.example:8443/create-tpot", "https://abc.tunnel.example:8443"),
        ("tunnel.example", None, "ws://tunnel.example/create-tpot", "http://abc.tunnel.example"),
    ],
)
def test_server_urls(server, subdomain, websocket_url, public_url):
    result = settings(server=server, subdomain=subdomain)
    assert result.websocket_url == websocket_url
    assert result.public_url("abc") == public_url


# Precedence: command line over environment over config file.

ENV = {"TPOT_SERVER": "http://env.example", "TPOT_AUTH_KEY": "env-key"}
CONFIG = {"tpotServer": "http://config.example", "authKey": "config-key", "subdomain": "fromconfig",
          "httpHost": "config.internal"}


@pytest.mark.parametrize(
    "kwargs, env, config, expected",
    [
        ({"server": "http://cli.example"}, ENV, CONFIG, "cli.example"),
        ({}, ENV, CONFIG, "env.example"),
        ({}, {}, CONFIG, "config.example"),
        ({}, {"TPOT_SERVER": ""}, CONFIG, "config.example"),
    ],
)
def test_server_precedence(kwargs, env, config, expected):
    assert settings(env=env, config=config, **kwargs).server.host == expected


@pytest.mark.parametrize(
    "kwargs, env, config, expected",
    [
        ({"auth_key": "cli-key"}, ENV, CONFIG, "cli-key"),
        ({}, ENV, CONFIG, "env-key"),
        ({}, {}, CONFIG, "config-key"),
        ({}, {}, {}, None),
        ({"auth_key": ""}, {}, {"authKey": ""}, None),
    ],
)
def test_auth_key_precedence(kwargs, env, config, expected):
    assert settings(server=SERVER, env=env, config=config, **kwargs).auth_key == expected


@pytest.mark.parametrize(
    "kwargs, config, expected",
    [({"subdomain": "CLI"}, CONFIG, "cli"), ({}, CONFIG, "fromconfig"), ({}, {}, None)],
)
def test_subdomain_precedence(kwargs, config, expected):
    assert settings(server=SERVER, config=config, **kwargs).subdomain == expected


@pytest.mark.parametrize(
    "kwargs, config, expected",
    [
        ({"http_host": "cli.internal"}, CONFIG, "cli.internal"),
        ({}, CONFIG, "config.internal"),
        ({}, {}, "localhost:8080"),
        ({"no_host_rewrite": True}, CONFIG, None),
        ({"no_host_rewrite": True, "http_host": "cli.internal"}, {}, None),
        ({"http_host": "cli.internal"}, {"noHostRewrite": True}, None),
        ({}, {"noHostRewrite": False, "httpHost": "config.internal"}, "config.internal"),
    ],
)
def test_host_rewrite_precedence(kwargs, config, expected):
    assert settings(server=SERVER, config=config, **kwargs).host_rewrite == expected


def test_no_server_anywhere():
    with pytest.raises(ClientError) as error:
        settings()
    assert_one_sentence(str(error.value))


@pytest.mark.parametrize("where", ["cli", "config"])
@pytest.mark.parametrize("subdomain", ["-demo", "a_b", "a" * 25, "a.b", " "])
def test_invalid_subdomain(subdomain, where):
    kwargs, config = ({"subdomain": subdomain}, {}) if where == "cli" else ({}, {"subdomain": subdomain})
    with pytest.raises(ClientError) as error:
        settings(server=SERVER, config=config, **kwargs)
    assert_one_sentence(str(error.value))


def test_bad_server_url():
    with pytest.raises(ClientError) as error:
        settings(server="ftp://tunnel.example")
    assert "server" in str(error.value)


def test_debug_flag():
    assert settings(server=SERVER, debug=True).debug is True
    assert settings(server=SERVER).debug is False


# The config file.


def test_missing_config_file_is_empty(tmp_path):
    assert read_config_file(str(tmp_path / "none.json")) == {}


def test_config_file_is_read(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG))
    assert read_config_file(str(path)) == CONFIG


@pytest.mark.parametrize("content", ["{not json", "", "\xff", '{"a": 1'])
def test_corrupt_config_file(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(content, encoding="latin-1")
    with pytest.raises(ClientError) as error:
        read_config_file(str(path))
    assert str(path) in str(error.value)
    assert_one_sentence(str(error.value))


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "42", "null"])
def test_config_file_must_hold_an_object(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ClientError) as error:
        read_config_file(str(path))
    assert_one_sentence(str(error.value))


def test_config_file_that_is_a_directory(tmp_path):
    with pytest.raises(ClientError):
        read_config_file(str(tmp_path))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home directory and no TPOT_* variables, so only the test's values count."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("TPOT_SERVER", "TPOT_AUTH_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def write_home_config(home, config):
    (home / ".tpot").mkdir()
    (home / ".tpot" / "config.json").write_text(json.dumps(config))


def test_default_config_file_is_in_home(home):
    write_home_config(home, {"tpotServer": "https://home.example", "authKey": "home-key"})
    assert read_config_file() == {"tpotServer": "https://home.example", "authKey": "home-key"}
    result = parse_command_line(["http", "8080"])
    assert result.server.host == "home.example" and result.auth_key == "home-key"


def test_client_settings_read_no_file_and_no_environment(home, monkeypatch):
    write_home_config(home, {"tpotServer": "https://home.example"})
    monkeypatch.setenv("TPOT_SERVER", "https://env.example")
    with pytest.raises(ClientError, match="No server given"):
        client_settings("8080")


# The command line.


def test_command_line_with_options_after_the_target(home):
    result = parse_command_line(["http", "8080", "-t", "http://localhost:3000", "-s", "Demo"])
    assert result.target == Address("http", "localhost", 8080, "localhost:8080")
    assert result.server == Address("http", "localhost", 3000, "localhost:3000")
    assert result.subdomain == "demo"
    assert result.websocket_url == "ws://localhost:3000/create-tpot?subdomain=demo"
    assert result.host_rewrite == "localhost:8080"
    assert result.auth_key is None and result.debug is False


def test_command_line_long_options_before_the_target(home):
    result = parse_command_line(["http", "--tpot-server", "https://t.example", "--auth-key", "secret",
                                 "--http-host", "app.internal", "--debug", "localhost:5000"])
    assert result.server.host_with_port == "t.example" and result.server.scheme == "https"
    assert (result.auth_key, result.host_rewrite, result.debug) == ("secret", "app.internal", True)
    assert result.target.port == 5000


def test_command_line_no_host_rewrite(home):
    assert parse_command_line(["http", "8080", "--server", SERVER, "--no-host-rewrite"]).host_rewrite is None


def test_command_line_falls_back_to_environment_and_config(home, monkeypatch):
    write_home_config(home, {"tpotServer": "http://config.example", "authKey": "config-key"})
    monkeypatch.setenv("TPOT_AUTH_KEY", "env-key")
    result = parse_command_line(["http", "8080"])
    assert (result.server.host, result.auth_key) == ("config.example", "env-key")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["http"],
        ["ftp", "8080"],
        ["http", "8080", "--bogus"],
        ["http", "8080", "-t"],
        ["http", "8080", "9090", "-t", SERVER],
        ["http", "8080"],  # no server anywhere
        ["http", "http://x", "--insecure", "-t", SERVER],
        ["http", "8080", "-t", "ftp://x"],
        ["http", "8080", "-t", SERVER, "-s", "-bad"],
        ["http", "not a target", "-t", SERVER],
    ],
)
def test_bad_command_lines_raise_client_error(home, argv):
    with pytest.raises(ClientError):
        parse_command_line(argv)


@pytest.mark.parametrize("given, expected", [(None, 500), ("1", 1), ("2000", 2000)])
def test_max_conversations(given, expected):
    settings = client_settings("8080", server="http://localhost:3000", max_conversations=given)
    assert settings.max_conversations == expected


@pytest.mark.parametrize("given", ["0", "-3", "many", "1.5"])
def test_max_conversations_must_be_a_whole_number_of_at_least_one(given):
    with pytest.raises(ClientError, match="--max-conversations must be a whole number of at least 1"):
        client_settings("8080", server="http://localhost:3000", max_conversations=given)


@pytest.mark.parametrize("name, why", [("demo-", "ending with '-'"), ("xn--80ak6aa92e", "xn--")])
def test_a_subdomain_that_is_no_dns_label_says_why(name, why):
    with pytest.raises(ClientError, match=why):
        client_settings("8080", server="http://localhost:3000", subdomain=name)


# Cluster settings.

CLUSTER_SECRET = "c" * 32
CLUSTER = {"redis": "redis://127.0.0.1:6379/0", "cluster_secret": CLUSTER_SECRET, "advertise": "10.0.0.5:3001"}


def test_without_redis_there_is_no_cluster():
    assert server_settings(domain="localhost", env={"CLUSTER_SECRET": CLUSTER_SECRET}).cluster is None


def test_a_cluster_from_options_and_from_the_environment():
    cluster = server_settings(domain="localhost", env={}, cluster=dict(CLUSTER, node_id="node-a")).cluster
    assert (cluster.redis_url, cluster.node_id, cluster.peer_listen, cluster.advertise, cluster.node_ttl) == (
        "redis://127.0.0.1:6379/0", "node-a", "tcp:3001", "10.0.0.5:3001", 10.0)
    assert CLUSTER_SECRET not in repr(cluster)
    env = {"REDIS_URL": "redis://:pw@redis:6379/1", "CLUSTER_SECRET": CLUSTER_SECRET, "TPOT_ADVERTISE": "10.1.2.3:3001"}
    cluster = server_settings(domain="localhost", env=env).cluster
    assert (cluster.secret, cluster.advertise) == (CLUSTER_SECRET, "10.1.2.3:3001")
    assert re.fullmatch(r"[A-Za-z0-9._-]+-[0-9a-f]{6}", cluster.node_id)  # the host name and a random suffix
    assert "pw" not in repr(cluster)


def test_the_default_advertised_address_is_this_host_at_the_peer_port():
    cluster = server_settings(domain="localhost", env={}, cluster=dict(CLUSTER, advertise=None, peer_listen="tcp:4001")).cluster
    assert cluster.advertise == f"{socket.getfqdn()}:4001"


@pytest.mark.parametrize("cluster, words", [
    ({"cluster_secret": CLUSTER_SECRET}, "--cluster-secret is for a cluster"),
    ({"node_ttl": "5"}, "--node-ttl is for a cluster"),
    (dict(CLUSTER, redis="localhost:6379"), "is not a Redis URL"),
    (dict(CLUSTER, cluster_secret=None), "CLUSTER_SECRET is not set"),
    (dict(CLUSTER, cluster_secret="c" * 31), "CLUSTER_SECRET is too short"),
    (dict(CLUSTER, node_id="a b"), "--node-id must be"),
    (dict(CLUSTER, advertise="10.0.0.5"), "--advertise must be HOST:PORT"),
    (dict(CLUSTER, advertise=None, peer_listen="unix:/tmp/peer"), "--advertise HOST:PORT"),
    (dict(CLUSTER, node_ttl="0"), "--node-ttl must be a positive number"),
])
def test_every_invalid_cluster_combination_is_one_sentence(cluster, words):
    with pytest.raises(ConfigError) as error:
        server_settings(domain="localhost", env={}, cluster=cluster)
    assert words in str(error.value)
    assert_one_sentence(str(error.value))


# --workers N.


def clustered(**options):
    return server_settings(domain="localhost", env={}, cluster=dict(CLUSTER, node_id="node-a", **options))


def test_one_worker_is_the_plain_settings():
    settings = clustered()
    assert worker_settings(settings) is settings and worker_settings(settings, "1") is settings
    plain = server_settings(domain="localhost", env={})
    assert worker_settings(plain, "1") is plain


@pytest.mark.parametrize("index, node_id, peer_listen, advertise", [
    (None, "node-a-w0", "tcp:3001:interface=10.0.0.5", "10.0.0.5:3001"),
    ("0", "node-a-w0", "tcp:3001:interface=10.0.0.5", "10.0.0.5:3001"),
    ("2", "node-a-w2", "tcp:3003:interface=10.0.0.5", "10.0.0.5:3003"),
])
def test_each_worker_is_a_node_with_the_next_peer_port(index, node_id, peer_listen, advertise):
    settings = worker_settings(clustered(peer_listen="tcp:3001:interface=10.0.0.5"), "3", index)
    cluster = settings.cluster
    assert (cluster.node_id, cluster.peer_listen, cluster.advertise) == (node_id, peer_listen, advertise)
    assert (settings.workers, settings.worker) == (3, int(index or 0))


def test_an_ipv6_advertised_address_keeps_its_brackets():
    settings = worker_settings(clustered(advertise="[fd00::5]:3001"), "2", "1")
    assert settings.cluster.advertise == "[fd00::5]:3002"


@pytest.mark.parametrize("settings, workers, words", [
    (lambda: server_settings(domain="localhost", env={}), "2", "--workers 2 needs --redis URL"),
    (clustered, "0", "--workers must be a positive whole number"),
    (clustered, "two", "--workers must be a positive whole number"),
    (clustered, "65", "--workers must be at most 64"),
    (lambda: clustered(peer_listen="tcp:0"), "2", "--workers needs a --peer-listen with a fixed port"),
    (lambda: server_settings(domain="localhost", env={}, listen=["ssl:3443:privateKey=k.pem"],
                             cluster=dict(CLUSTER, node_id="node-a")), "2", "--workers shares tcp:, tcp6: and haproxy:tcp"),
])
def test_every_invalid_workers_combination_is_one_sentence(settings, workers, words):
    with pytest.raises(ConfigError) as error:
        worker_settings(settings(), workers)
    assert words in str(error.value)
    assert_one_sentence(str(error.value))


# Pools (tpot http/tcp --pool SECRET).

POOL_SECRET = "pool-" * 7


def test_a_pool_needs_a_subdomain_and_a_long_secret():
    settings = parse_command_line(["http", "8080", "-t", "localhost:3000", "-s", "shared", "--pool", POOL_SECRET],
                                  env={}, config={})
    assert settings.pool == POOL_SECRET and settings.required_extensions == {"pool"}
    with pytest.raises(ClientError, match="give it with -s NAME"):
        parse_command_line(["http", "8080", "-t", "localhost:3000", "--pool", POOL_SECRET], env={}, config={})
    with pytest.raises(ClientError, match="The pool secret must be 32"):
        parse_command_line(["http", "8080", "-t", "localhost:3000", "-s", "shared", "--pool", "short"], env={}, config={})


def test_the_pool_secret_may_come_from_the_environment():
    settings = client_settings("8080", server="localhost:3000", subdomain="shared", env={"TPOT_POOL": POOL_SECRET})
    assert settings.pool == POOL_SECRET
    assert client_settings("8080", server="localhost:3000", env={}).pool is None


def test_tcp_members_of_a_pool_share_an_access_secret_that_is_not_the_pool_secret():
    def member(*extra):
        argv = ["tcp", "22", "-t", "localhost:3000", "-s", "ssh", "--pool", POOL_SECRET, *extra]
        return parse_command_line(argv, env={}, config={})
    first, second = member(), member()
    assert first.access_secret == second.access_secret != POOL_SECRET
    assert len(first.access_secret) >= 32
    assert first.required_extensions == {"tcp", "pool"}
    assert member("--secret", "x" * 32).access_secret == "x" * 32
    assert parse_command_line(["tcp", "22", "-t", "localhost:3000"], env={}, config={}).access_secret != first.access_secret


# The inspector's options (tpot http --inspect ADDR, --no-inspect, --inspect-keep N).


@pytest.mark.parametrize("address, expected", [
    (None, InspectSettings("127.0.0.1", 4040, True, 500)),
    ("4041", InspectSettings("127.0.0.1", 4041, False, 500)),
    (4041, InspectSettings("127.0.0.1", 4041, False, 500)),
    ("127.0.0.1:4041", InspectSettings("127.0.0.1", 4041, False, 500)),
    ("[::1]:4041", InspectSettings("::1", 4041, False, 500)),
    ("0.0.0.0:4040", InspectSettings("0.0.0.0", 4040, False, 500)),
    ("localhost:4042", InspectSettings("localhost", 4042, False, 500)),
    (" 127.0.0.2:0 ", InspectSettings("127.0.0.2", 0, False, 500)),
])
def test_inspect_addresses(address, expected):
    assert inspect_settings(address) == expected


def test_the_default_inspector_searches_the_inspect_ports():
    assert (DEFAULT_INSPECT_KEEP, INSPECT_PORTS) == (500, range(4040, 4050))
    assert InspectSettings() == inspect_settings() == InspectSettings("127.0.0.1", INSPECT_PORTS[0], True, 500)


@pytest.mark.parametrize("address", ["", "x", "example.com:4040", "::1:4040", "[::1]", "127.0.0.1:", "127.0.0.1:65536",
                                     "127.0.0.1:-1", "[example]:80", "1.2.3.4:80:90", "4040x", "٤٠٤٠"])
def test_bad_inspect_addresses(address):
    with pytest.raises(ClientError) as error:
        inspect_settings(address)
    assert str(error.value).startswith("--inspect takes PORT or HOST:PORT")
    assert_one_sentence(str(error.value))


@pytest.mark.parametrize("keep, expected", [(None, 500), ("1", 1), (" 20 ", 20), (100000, 100000)])
def test_inspect_keep(keep, expected):
    assert inspect_settings(keep=keep).keep == expected
    assert inspect_settings("4041", keep=keep).keep == expected


@pytest.mark.parametrize("keep", ["0", "100001", "-1", "1.5", "many", ""])
def test_inspect_keep_is_a_whole_number_from_1_to_100000(keep):
    with pytest.raises(ClientError, match=r"--inspect-keep must be a whole number from 1 to 100000") as error:
        inspect_settings(keep=keep)
    assert_one_sentence(str(error.value))


def test_no_inspect_turns_it_off_and_conflicts_with_an_address():
    assert inspect_settings(disabled=True) is None
    assert inspect_settings(disabled=True, keep="5") is None
    with pytest.raises(ClientError) as error:
        inspect_settings("4041", disabled=True)
    assert str(error.value) == "Use either --inspect or --no-inspect, not both."


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("192.168.1.2", False), ("128.0.0.1", False)])
def test_inspect_loopback(host, loopback):
    assert InspectSettings(host=host).loopback is loopback


def test_tpot_http_has_the_default_inspector(home):
    assert parse_command_line(["http", "8080", "-t", SERVER]).inspect == InspectSettings()


@pytest.mark.parametrize("options, expected", [
    (["--inspect", "4045"], InspectSettings("127.0.0.1", 4045, False, 500)),
    (["--inspect", "0.0.0.0:4040", "--inspect-keep", "20"], InspectSettings("0.0.0.0", 4040, False, 20)),
    (["--inspect-keep", "20"], InspectSettings(keep=20)),
    (["--no-inspect"], None),
    (["-q"], InspectSettings()),  # -q only silences the stdout log
])
def test_tpot_http_inspect_options(home, options, expected):
    result = parse_command_line(["http", "8080", "-t", SERVER, *options])
    assert result.inspect == expected


def test_quiet_and_no_inspect_are_independent(home):
    quiet = parse_command_line(["http", "8080", "-t", SERVER, "-q"])
    silent = parse_command_line(["http", "8080", "-t", SERVER, "--no-inspect"])
    assert (quiet.quiet, quiet.inspect is None, silent.quiet, silent.inspect is None) == (True, False, False, True)


@pytest.mark.parametrize("argv, log_format", [
    (["http", "8080", "-t", SERVER], "term"),
    (["http", "8080", "-t", SERVER, "--log-format", "plain"], "plain"),
    (["tcp", "22", "-t", SERVER, "--secret", "s" * 32, "--log-format", "plain"], "plain"),
    (["tcp", "22", "-t", SERVER, "--secret", "s" * 32, "-q"], "term"),  # -q is checked where the area is chosen
    (["connect", "db", "-t", SERVER, "--secret", "s" * 32, "--stdio"], "plain"),  # its stdout is the stream
])
def test_the_log_format_comes_with_the_settings(home, argv, log_format):
    settings, got = cli.command_line(argv)
    assert got == log_format and settings == parse_command_line(argv)


def test_an_unknown_log_format_is_one_sentence(home):
    with pytest.raises(ClientError) as error:
        cli.command_line(["http", "8080", "-t", SERVER, "--log-format", "json"])
    assert str(error.value).startswith("argument --log-format: invalid choice: 'json'")


@pytest.mark.parametrize("options", [["--inspect", "nowhere"], ["--inspect-keep", "0"],
                                     ["--inspect", "4041", "--no-inspect"], ["--inspect"]])
def test_bad_tpot_http_inspect_options(home, options):
    with pytest.raises(ClientError) as error:
        parse_command_line(["http", "8080", "-t", SERVER, *options])
    assert "inspect" in str(error.value)


def test_tcp_tunnels_are_not_inspected(home):
    assert parse_command_line(["tcp", "22", "-t", SERVER]).inspect is None
    assert client_settings("22", server=SERVER, kind="tcp", inspect=InspectSettings()).inspect is None
    with pytest.raises(ClientError, match="unrecognized arguments: --inspect"):
        parse_command_line(["tcp", "22", "-t", SERVER, "--inspect", "4041"])


def test_client_settings_carries_the_inspector_of_an_http_tunnel():
    assert client_settings("8080", server=SERVER).inspect is None
    assert client_settings("8080", server=SERVER, inspect=InspectSettings(port=4041)).inspect.port == 4041


def test_a_config_key_nothing_reads_is_warned_of_with_the_closest_known_one():
    from tpot.client.settings import config_warnings

    assert config_warnings({"tpotServer": "x", "authKey": "y", "subdomain": "z"}) == []
    assert config_warnings({"subdomian": "demo"}, "config.json") == [
        "config.json has the key 'subdomian', which tpot does not read; did you mean 'subdomain'?"]
    (far,) = config_warnings({"colour": 1}, "config.json")
    assert far.startswith("config.json has the key 'colour', which tpot does not read (known: tpotServer, ")
