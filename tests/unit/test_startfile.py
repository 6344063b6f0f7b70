"""`tpot start`'s file of tunnels (tpot.client.startfile) and its command line."""

import re

import pytest

from tpot.client.cli import parse_command_line
from tpot.client.files import read_start_file
from tpot.client.settings import Address, ClientError, ClientSettings, InspectSettings, client_settings
from tpot.client.startfile import EXAMPLE, StartSettings, start_settings
from tpot.protocol.codec import HTTP, TCP

PATH = "~/.tpot/tpot.toml"
SERVER = "http://localhost:3000"
SECRET = "s" * 32
POOL = "p" * 32
PEM = b"-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"

TOML = f"""
server = "{SERVER}"
auth_key = "file-key"

[inspect]
addr = "127.0.0.1:4041"
keep = 50

[tunnels.web]
proto = "http"
addr = 8000
subdomain = "Web"
host_header = "app.test"
forwarded_headers = false
basic_auth = "user:pass"
allow_ip = ["127.0.0.1/32", "10.0.0.0/8"]
max_conversations = 20

[tunnels.secure]
addr = "https://localhost:8443"
ca = "ca.pem"
pool = "{POOL}"
subdomain = "secure"

[tunnels.db]
proto = "tcp"
addr = "localhost:5432"
secret = "{SECRET}"
"""

YAML = f"""
server: {SERVER}
auth_key: file-key
inspect:
  addr: "127.0.0.1:4041"
  keep: 50
tunnels:
  web:
    proto: http
    addr: 8000
    subdomain: Web
    host_header: app.test
    forwarded_headers: false
    basic_auth: user:pass
    allow_ip: [127.0.0.1/32, 10.0.0.0/8]
    max_conversations: 20
  secure:
    addr: https://localhost:8443
    ca: ca.pem
    pool: {POOL}
    subdomain: secure
  db:
    proto: tcp
    addr: localhost:5432
    secret: {SECRET}
"""


def assert_one_sentence(message):
    assert message.endswith(".") and "\n" not in message, message
    assert re.search(r"[.!?]\s+[A-Z]", message[:-1]) is None, message


def read_ca(path):
    assert path == "~/.tpot/ca.pem"  # beside the file
    return PEM


def start(text, names=(), path=PATH, **kwargs):
    kwargs.setdefault("env", {})
    kwargs.setdefault("config", {})
    return start_settings(text, path, names, all_tunnels=not names, read_ca=read_ca, **kwargs)


def expected_tunnels(env=None, config=None):
    common = dict(server=SERVER, auth_key="file-key", env={} if env is None else env, config=config or {})
    return (
        ("web", client_settings("8000", subdomain="Web", http_host="app.test", no_forwarded_headers=True,
                                basic_auth="user:pass", allow_ip=["127.0.0.1/32", "10.0.0.0/8"],
                                max_conversations=20, **common)),
        ("secure", client_settings("https://localhost:8443", ca=PEM, pool=POOL, subdomain="secure", **common)),
        ("db", client_settings("localhost:5432", kind=TCP, access_secret=SECRET, **common)),
    )


@pytest.mark.parametrize("text, path", [(TOML, PATH), (YAML, "~/.tpot/tpot.yaml"), (YAML, "~/.tpot/tpot.yml")])
def test_every_key_of_http_and_tcp_tunnels_in_toml_and_yaml(text, path):
    read = []
    result = start_settings(text, path, all_tunnels=True, env={}, config={},
                            read_ca=lambda name: read.append(name) or PEM)
    assert result == StartSettings(expected_tunnels(), InspectSettings("127.0.0.1", 4041, False, 50), False, False, path)
    assert read == [path.replace(path.rsplit("/", 1)[1], "ca.pem")]
    web, secure, db = (settings for _, settings in result.tunnels)
    assert (web.kind, web.subdomain, web.host_rewrite, web.forwarded_headers) == (HTTP, "web", "app.test", False)
    assert (web.basic_auth, len(web.allow_ip), web.max_conversations) == ("user:pass", 2, 20)
    assert (secure.target, secure.target_ca, secure.pool) == (Address("https", "localhost", 8443, "localhost:8443"),
                                                              PEM, POOL)
    assert (db.kind, db.access_secret, db.target.host_with_port) == (TCP, SECRET, "localhost:5432")
    assert all(settings.inspect is None for _, settings in result.tunnels)  # the StartSettings' inspect serves all


def test_the_example_in_the_help_is_a_valid_file():
    result = start(EXAMPLE)
    assert [name for name, _ in result.tunnels] == ["web", "app", "db"]
    assert result.inspect == InspectSettings("127.0.0.1", 4040, search=False, keep=500)


def test_the_least_a_file_needs_is_a_tunnel_with_an_addr():
    (name, settings), = start("[tunnels.web]\naddr = 8000\n", env={"TPOT_SERVER": SERVER}).tunnels
    assert name == "web"
    assert settings == client_settings("8000", server=SERVER)
    assert start("[tunnels.web]\naddr = 8000\n", env={"TPOT_SERVER": SERVER}).inspect == InspectSettings()


def test_an_addr_that_is_a_bare_word_must_resolve_as_for_tpot_http():
    text = f'server = "{SERVER}"\n[tunnels.web]\naddr = "notaport"\n'
    with pytest.raises(ClientError) as refused:
        start(text, resolves=lambda name: False)
    assert str(refused.value) == (f'{PATH}: tunnel "web": the target \'notaport\' is neither a port number nor a'
                                  " host name that resolves; give a port (8080), host:port or a URL.")
    assert start(text, resolves={"notaport"}.__contains__).tunnels[0][1].target.port == 80


def test_host_header_false_passes_host_through_and_true_or_absent_keeps_the_defaults():
    text = f'server = "{SERVER}"\n[tunnels.a]\naddr = 8000\nhost_header = false\n[tunnels.b]\naddr = 8001\n'
    a, b = (settings for _, settings in start(text).tunnels)
    assert (a.host_rewrite, b.host_rewrite) == (None, "localhost:8001")
    assert (a.forwarded_headers, b.forwarded_headers) == (True, True)


def test_allow_ip_may_be_one_range_as_text():
    text = f'server = "{SERVER}"\n[tunnels.a]\naddr = 8000\nallow_ip = "10.0.0.0/8"\n'
    assert [str(network) for network in start(text).tunnels[0][1].allow_ip] == ["10.0.0.0/8"]


def test_an_absolute_ca_path_is_taken_as_it_is():
    text = f'server = "{SERVER}"\n[tunnels.a]\naddr = "https://x"\nca = "/etc/ca.pem"\n'
    read = []
    start_settings(text, PATH, all_tunnels=True, env={}, config={}, read_ca=lambda name: read.append(name) or PEM)
    assert read == ["/etc/ca.pem"]


# Which tunnels.

TWO = f'server = "{SERVER}"\n[tunnels.web]\naddr = 8000\n[tunnels.api]\naddr = 8001\n[tunnels.db]\nproto = "tcp"\naddr = 5432\n'


@pytest.mark.parametrize("names, started", [(["api"], ["api"]), (["db", "web"], ["db", "web"]),
                                            (["web", "web"], ["web"])])
def test_only_the_named_tunnels_start(names, started):
    assert [name for name, _ in start(TWO, names).tunnels] == started


def test_all_starts_every_tunnel_in_the_files_order():
    assert [name for name, _ in start_settings(TWO, PATH, all_tunnels=True, env={}, config={}).tunnels] == [
        "web", "api", "db"]


def test_without_names_or_all_the_error_lists_the_tunnels():
    with pytest.raises(ClientError) as error:
        start_settings(TWO, PATH, env={}, config={})
    assert str(error.value) == "Name the tunnels to start, or use --all: ~/.tpot/tpot.toml has web, api, db."


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ClientError) as error:
        start(TWO, ["web", "wbe"])
    assert str(error.value) == '~/.tpot/tpot.toml has no tunnel "wbe" (it has web, api, db).'


def test_a_tunnel_not_started_is_checked_too():
    with pytest.raises(ClientError, match='tunnel "db": unknown key "adr"'):
        start(TWO.replace("addr = 5432", "adr = 5432"), ["web"])


# The errors: one sentence naming the file, the tunnel and the key.

ONE = f'server = "{SERVER}"\n[tunnels.web]\naddr = 8000\n'


@pytest.mark.parametrize("text, message", [
    (ONE + "adr = 8001\n",
     '~/.tpot/tpot.toml: tunnel "web": unknown key "adr" (known: proto, addr, subdomain, max_conversations, pool,'
     " host_header, forwarded_headers, basic_auth, allow_ip, insecure, ca)."),
    (f'server = "{SERVER}"\n[tunnels.web]\nsubdomain = "web"\n',
     '~/.tpot/tpot.toml: tunnel "web": addr is missing; give the local port or host:port to expose.'),
    (f'server = "{SERVER}"\n[tunnels.db]\nproto = "udp"\naddr = 53\n',
     '~/.tpot/tpot.toml: tunnel "db": proto must be http or tcp, not "udp".'),
    (ONE + "insecure = \"yes\"\n", '~/.tpot/tpot.toml: tunnel "web": insecure must be true or false, not "yes".'),
    (ONE + "max_conversations = \"5\"\n",
     '~/.tpot/tpot.toml: tunnel "web": max_conversations must be a number, not "5".'),
    (f'server = "{SERVER}"\n[tunnels.web]\naddr = 1.5\n',
     '~/.tpot/tpot.toml: tunnel "web": addr must be a port number or HOST:PORT text, not 1.5.'),
    (f'server = "{SERVER}"\n[tunnels.web]\naddr = true\n',
     '~/.tpot/tpot.toml: tunnel "web": addr must be a port number or HOST:PORT text, not true.'),
    (ONE + "host_header = true\n", '~/.tpot/tpot.toml: tunnel "web": host_header must be text or false, not true.'),
    (ONE + "allow_ip = [8]\n", '~/.tpot/tpot.toml: tunnel "web": allow_ip must be a list of CIDR texts, not [8].'),
    (ONE + "subdomain = 7\n", '~/.tpot/tpot.toml: tunnel "web": subdomain must be text, not 7.'),
    (f'server = "{SERVER}"\n[tunnels.db]\nproto = "tcp"\naddr = 5432\nhost_header = "x"\n',
     '~/.tpot/tpot.toml: tunnel "db": host_header applies only to http tunnels (proto = "http").'),
    (ONE + f'secret = "{SECRET}"\n',
     '~/.tpot/tpot.toml: tunnel "web": secret applies only to tcp tunnels (proto = "tcp").'),
    (f'server = "{SERVER}"\ntunnels.web = 8000\n', '~/.tpot/tpot.toml: tunnel "web" must be a table with proto and addr.'),
    ("serve = 1\n" + ONE, '~/.tpot/tpot.toml: unknown key "serve" (known: server, auth_key, inspect, tunnels).'),
    ("server = 5\n[tunnels.web]\naddr = 8000\n", "~/.tpot/tpot.toml: server must be text, not 5."),
    ("", "~/.tpot/tpot.toml: no tunnels; add a [tunnels.NAME] section with proto and addr."),
    (f'server = "{SERVER}"\n[tunnels]\n', "~/.tpot/tpot.toml: no tunnels; add a [tunnels.NAME] section with proto and addr."),
    (f'server = "{SERVER}"\ntunnels = 3\n', "~/.tpot/tpot.toml: no tunnels; add a [tunnels.NAME] section with proto and addr."),
    (f'server = "{SERVER}"\n[tunnels.web\naddr = 8000\n',
     "~/.tpot/tpot.toml: not valid TOML: Expected ']' at the end of a table declaration (at line 2, column 13)."),
    (f'server = "{SERVER}"\n[tunnels.web]\naddr 8000\n',
     "~/.tpot/tpot.toml: not valid TOML: Expected '=' after a key in a key/value pair (at line 3, column 6)."),
    ('[tunnels.web]\naddr = 8000\n',
     '~/.tpot/tpot.toml: no server given; add server = "https://..." to it, set TPOT_SERVER or tpotServer in'
     " ~/.tpot/config.json."),
    # client_settings's own messages, with the tunnel's name before them.
    (ONE + 'subdomain = "-web"\n', '~/.tpot/tpot.toml: tunnel "web": the subdomain \'-web\' is not valid: use 1-24 of'
     " a-z, 0-9 and '-', not starting or ending with '-'."),
    (f'server = "{SERVER}"\n[tunnels.web]\naddr = "ftp://x"\n',
     "~/.tpot/tpot.toml: tunnel \"web\": the target 'ftp://x' is not valid: use host:port or http(s)://host[:port]."),
    (f'server = "{SERVER}"\n[tunnels.db]\nproto = "tcp"\naddr = "http://x:1"\n',
     "~/.tpot/tpot.toml: tunnel \"db\": the target 'http://x:1' is not valid for tpot tcp: use PORT or host:port."),
    (ONE + "insecure = true\n",
     '~/.tpot/tpot.toml: tunnel "web": the options --insecure and --ca only apply to an https:// target.'),
    (ONE + "max_conversations = 0\n",
     '~/.tpot/tpot.toml: tunnel "web": --max-conversations must be a whole number of at least 1, not 0.'),
    (ONE + 'pool = "short"\nsubdomain = "web"\n',
     '~/.tpot/tpot.toml: tunnel "web": the pool secret must be 32 to 256 printable characters without spaces.'),
    (ONE + 'basic_auth = "nobody"\n', '~/.tpot/tpot.toml: tunnel "web": --basic-auth needs USER:PASS with a non-empty'
     " user and password, e.g. --basic-auth alice:s3cret."),
    (ONE + 'allow_ip = ["10.0.0.0/33"]\n', None),
    # [inspect]
    (ONE + '[inspect]\nadr = 4041\n', '~/.tpot/tpot.toml: [inspect]: unknown key "adr" (known: addr, keep).'),
    (ONE + '[inspect]\naddr = "example.com:4041"\n',
     "~/.tpot/tpot.toml: [inspect]: addr takes PORT or HOST:PORT with an IP address or localhost"
     " (such as 127.0.0.1:4041), not 'example.com:4041'."),
    (ONE + '[inspect]\naddr = true\n',
     "~/.tpot/tpot.toml: [inspect]: addr must be a port number, HOST:PORT text or false, not true."),
    (ONE + '[inspect]\nkeep = 0\n', "~/.tpot/tpot.toml: [inspect]: keep must be a whole number from 1 to 100000, not 0."),
    (ONE + '[inspect]\nkeep = "all"\n', '~/.tpot/tpot.toml: [inspect]: keep must be a number, not "all".'),
    ('inspect = 4041\n' + ONE, "~/.tpot/tpot.toml: [inspect] must be a table with addr and keep, or inspect = false."),
])
def test_each_mistake_in_the_file_is_one_sentence_naming_it(text, message):
    with pytest.raises(ClientError) as error:
        start(text)
    assert_one_sentence(str(error.value))
    assert str(error.value).startswith("~/.tpot/tpot.toml: ")
    if message is not None:
        assert str(error.value) == message


@pytest.mark.parametrize("text, message", [
    ("tunnels:\n  web:\n    addr: 8000\n   bad: 1\n",
     "tpot.yaml: not valid YAML at line 4, column 4: expected <block end>, but found '<block mapping start>'."),
    ("tunnels: [1\n", "tpot.yaml: not valid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'."),
    ("- web\n", "tpot.yaml: must hold settings and a tunnels section, not list."),
    ("", "tpot.yaml: must hold settings and a tunnels section, not NoneType."),
    ("tunnels:\n  web:\n    addr:\n", 'tpot.yaml: tunnel "web": addr is missing; give the local port or host:port to expose.'),
    ("tunnels:\n  web:\n    addr: 8000\n    insecure: maybe\n",
     'tpot.yaml: tunnel "web": insecure must be true or false, not "maybe".'),
    ("tunnels:\n  web: 8000\n", 'tpot.yaml: tunnel "web" must be a table with proto and addr.'),
])
def test_yaml_mistakes(text, message):
    with pytest.raises(ClientError) as error:
        start(text, path="tpot.yaml", env={"TPOT_SERVER": SERVER})
    assert str(error.value) == message
    assert_one_sentence(message)


def test_yaml_tunnel_names_that_are_numbers_are_names():
    result = start("tunnels:\n  8000:\n    addr: 8000\n", ["8000"], path="t.yml", env={"TPOT_SERVER": SERVER})
    assert [name for name, _ in result.tunnels] == ["8000"]


# The server and auth key: the file's, else the environment's, else ~/.tpot/config.json's.

BARE = "[tunnels.web]\naddr = 8000\n[tunnels.db]\nproto = \"tcp\"\naddr = 5432\n"


@pytest.mark.parametrize("text, env, config, server, key", [
    (f'server = "http://file.example"\nauth_key = "file-key"\n' + BARE,
     {"TPOT_SERVER": "http://env.example", "TPOT_AUTH_KEY": "env-key"},
     {"tpotServer": "http://config.example", "authKey": "config-key"}, "file.example", "file-key"),
    (BARE, {"TPOT_SERVER": "http://env.example", "TPOT_AUTH_KEY": "env-key"},
     {"tpotServer": "http://config.example", "authKey": "config-key"}, "env.example", "env-key"),
    (BARE, {}, {"tpotServer": "http://config.example", "authKey": "config-key"}, "config.example", "config-key"),
    (BARE, {"TPOT_SERVER": "http://env.example"}, {}, "env.example", None),
])
def test_server_and_auth_key_fall_back_to_the_environment_then_config_json(text, env, config, server, key):
    for _, settings in start(text, env=env, config=config).tunnels:
        assert (settings.server.host, settings.auth_key) == (server, key)


def test_config_json_gives_no_tunnel_its_subdomain_or_host():
    # Each tunnel would ask for the one subdomain at once.
    config = {"tpotServer": SERVER, "subdomain": "mine", "httpHost": "x.internal", "noForwardedHeaders": True}
    web = start(BARE, ["web"], config=config).tunnels[0][1]
    assert (web.subdomain, web.host_rewrite, web.forwarded_headers) == (None, "localhost:8000", True)


def test_the_environment_still_gives_what_tpot_http_and_tcp_take_from_it():
    env = {"TPOT_SERVER": SERVER, "TPOT_BASIC_AUTH": "a:b", "TPOT_ACCESS_SECRET": SECRET}
    web, db = (settings for _, settings in start(BARE, env=env).tunnels)
    assert (web.basic_auth, db.access_secret) == ("a:b", SECRET)


# The inspector: the file's [inspect] under the command line's options.

def inspect_of(section, **options):
    return start(f'server = "{SERVER}"\n{section}\n[tunnels.web]\naddr = 8000\n', **options).inspect


@pytest.mark.parametrize("section, options, expected", [
    ("", {}, InspectSettings()),
    ('[inspect]\naddr = "0.0.0.0:4050"\n', {}, InspectSettings("0.0.0.0", 4050, False, 500)),
    ("[inspect]\naddr = 4041\n", {}, InspectSettings("127.0.0.1", 4041, False, 500)),
    ('[inspect]\naddr = "[::1]:4041"\n', {}, InspectSettings("::1", 4041, False, 500)),
    ("[inspect]\nkeep = 20\n", {}, InspectSettings(keep=20)),
    ("[inspect]\naddr = false\n", {}, None),
    ("inspect = false\n", {}, None),
    ('[inspect]\naddr = "127.0.0.1:4041"\nkeep = 20\n', {"no_inspect": True}, None),
    ('[inspect]\naddr = "127.0.0.1:4041"\nkeep = 20\n', {"inspect_address": "4042"},
     InspectSettings("127.0.0.1", 4042, False, 20)),
    ('[inspect]\naddr = "127.0.0.1:4041"\nkeep = 20\n', {"inspect_keep": "7"},
     InspectSettings("127.0.0.1", 4041, False, 7)),
    ("[inspect]\naddr = false\n", {"inspect_address": "localhost:4045"}, InspectSettings("localhost", 4045, False)),
    ("[inspect]\naddr = false\n", {"inspect_keep": "7"}, None),
    ("", {"inspect_address": "4042", "inspect_keep": "9"}, InspectSettings("127.0.0.1", 4042, False, 9)),
])
def test_the_command_line_overrides_the_files_inspect(section, options, expected):
    assert inspect_of(section, **options) == expected


@pytest.mark.parametrize("options, words", [
    ({"inspect_address": "nowhere"}, "--inspect takes PORT or HOST:PORT"),
    ({"inspect_keep": "0"}, "--inspect-keep must be a whole number from 1 to 100000"),
    ({"inspect_address": "4041", "no_inspect": True}, "Use either --inspect or --no-inspect, not both."),
])
def test_bad_inspector_options_name_the_option(options, words):
    with pytest.raises(ClientError) as error:
        inspect_of("", **options)
    assert words in str(error.value)
    assert_one_sentence(str(error.value))


# The command line: tpot start [NAME ...] [--all] [--config PATH] [-q] [-d] [--inspect ...].


class Files:
    """A stand-in for files.read_start_file: the text of the one file, and what was asked."""

    def __init__(self, text, path=PATH):
        self.text, self.path, self.asked = text, path, []

    def __call__(self, path):
        self.asked.append(path)
        return (path or self.path), self.text


def command(argv, text=TWO, env=None, config=None):
    files = Files(text)
    result = parse_command_line(argv, env={} if env is None else env, config={} if config is None else config,
                                read_start=files)
    return result, files.asked


def test_start_all_from_the_default_file():
    result, asked = command(["start", "--all"])
    assert asked == [None]
    assert isinstance(result, StartSettings) and result.config_path == PATH
    assert [name for name, _ in result.tunnels] == ["web", "api", "db"]
    assert (result.debug, result.quiet, result.inspect) == (False, False, InspectSettings())
    assert all(isinstance(settings, ClientSettings) for _, settings in result.tunnels)


def test_start_names_with_every_option():
    result, asked = command(["start", "db", "web", "--config", "tunnels.toml", "-q", "-d", "--inspect", "4045",
                             "--inspect-keep", "10"])
    assert asked == ["tunnels.toml"] and result.config_path == "tunnels.toml"
    assert [name for name, _ in result.tunnels] == ["db", "web"]
    assert (result.debug, result.quiet) == (True, True)
    assert all(settings.debug and settings.quiet for _, settings in result.tunnels)
    assert result.inspect == InspectSettings("127.0.0.1", 4045, False, 10)


def test_start_no_inspect():
    assert command(["start", "--all", "--no-inspect"])[0].inspect is None


def test_start_reads_the_environment_and_config_json_it_is_given():
    result, _ = command(["start", "web"], text=BARE, env={"TPOT_AUTH_KEY": "env-key"},
                        config={"tpotServer": "http://config.example"})
    assert (result.tunnels[0][1].server.host, result.tunnels[0][1].auth_key) == ("config.example", "env-key")


@pytest.mark.parametrize("argv", [["start", "-t", SERVER, "--all"], ["start", "--bogus"], ["start", "--config"]])
def test_start_takes_no_server_on_the_command_line_nor_unknown_options(argv):
    with pytest.raises(ClientError, match=r"\(see tpot --help\)"):
        command(argv)


def test_start_without_names_says_to_name_them():
    with pytest.raises(ClientError, match="Name the tunnels to start, or use --all"):
        command(["start"])


# Reading the file from disk (tpot.client.files).


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".tpot").mkdir()
    return tmp_path / ".tpot"


@pytest.mark.parametrize("present, chosen", [
    (["tpot.toml"], "tpot.toml"), (["tpot.yaml"], "tpot.yaml"), (["tpot.yml"], "tpot.yml"),
    (["tpot.toml", "tpot.yaml"], "tpot.toml"), (["tpot.yaml", "tpot.yml"], "tpot.yaml"),
])
def test_the_default_file_is_toml_unless_only_yaml_exists(home, present, chosen):
    for name in present:
        (home / name).write_text(f"# {name}\n")
    assert read_start_file() == (f"~/.tpot/{chosen}", f"# {chosen}\n")


def test_a_missing_file_says_to_create_it(home):
    with pytest.raises(ClientError) as error:
        read_start_file()
    assert str(error.value) == "~/.tpot/tpot.toml does not exist; create it (see tpot start --help)."
    with pytest.raises(ClientError, match=r"^elsewhere\.toml does not exist"):
        read_start_file("elsewhere.toml")


def test_a_file_that_cannot_be_read_says_so(home):
    (home / "bad.toml").write_bytes(b"\xff\xfe")
    for path in (str(home / "bad.toml"), str(home)):
        with pytest.raises(ClientError) as error:
            read_start_file(path)
        assert "cannot be read" in str(error.value)
        assert_one_sentence(str(error.value))


def test_the_command_reads_the_file_given(home, tmp_path):
    (tmp_path / "tunnels.yml").write_text(f"server: {SERVER}\ntunnels:\n  web:\n    addr: 8000\n")
    result = parse_command_line(["start", "--all", "--config", str(tmp_path / "tunnels.yml")], env={}, config={})
    assert result.tunnels == (("web", client_settings("8000", server=SERVER)),)


def test_main_prints_the_files_sentence_and_fails(home, capsys):
    from tpot.client.cli import main

    assert main(["start", "--all"]) == 1
    assert capsys.readouterr().err == "tpot: ~/.tpot/tpot.toml does not exist; create it (see tpot start --help).\n"
