"""`tpot start`'s file of tunnels (~/.tpot/tpot.toml, or YAML), read into settings.

Pure: the caller passes the file's text and name (tpot.client.files reads it), the
environment and ~/.tpot/config.json's contents, which still give the defaults of the
server and the auth key.  Each tunnel's settings are made by tpot.client.settings.client_settings, as
`tpot http` and `tpot tcp` make theirs, so the same rules apply.  Every error is one
ClientError sentence naming the file, the tunnel and the key.  EXAMPLE shows the format.
"""

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass

from tpot.client.settings import (
    CONFIG_PATH,
    ENV_SERVER,
    ClientError,
    InspectSettings,
    client_settings,
    configured_server,
    inspect_settings,
)
from tpot.protocol.codec import HTTP, TCP

EXAMPLE = """\
server = "https://tpot.example.com"   # else TPOT_SERVER, else tpotServer in ~/.tpot/config.json
auth_key = "..."                      # else TPOT_AUTH_KEY, else authKey in ~/.tpot/config.json

[inspect]                             # optional; inspect = false turns the inspector off
addr = "127.0.0.1:4040"               # exactly this, or false; unset: 4040 or the next free up to 4049
keep = 500

[tunnels.web]
proto = "http"                        # the default; or "tcp"
addr = 8000                           # the target, as tpot http and tpot tcp take it
subdomain = "web"                     # optional, as are the rest
host_header = "app.test"              # like --http-host; false like --no-host-rewrite
forwarded_headers = true              # false like --no-forwarded-headers
basic_auth = "user:pass"
allow_ip = ["127.0.0.1/32"]
max_conversations = 500
# pool = "a secret of at least 32 characters"

[tunnels.app]
addr = "https://localhost:8443"
insecure = false                      # true like --insecure
ca = "ca.pem"                         # like --ca; beside this file unless absolute

[tunnels.db]
proto = "tcp"
addr = 5432
# secret = "..."                      # like tpot tcp --secret; else a new one, printed
"""

TOP_KEYS = ("server", "auth_key", "inspect", "tunnels")
INSPECT_KEYS = ("addr", "keep")
COMMON_KEYS = ("proto", "addr", "subdomain", "max_conversations", "pool")
HTTP_KEYS = ("host_header", "forwarded_headers", "basic_auth", "allow_ip", "insecure", "ca")
TCP_KEYS = ("secret",)
SHARED_CONFIG_KEYS = ("tpotServer", "authKey")

# What each key's value may be, and how an error says so.
_TYPES = {"server": str, "auth_key": str, "keep": int, "proto": str, "addr": (int, str), "subdomain": str,
          "max_conversations": int, "pool": str, "host_header": (str, bool), "forwarded_headers": bool,
          "basic_auth": str, "allow_ip": (list, str), "insecure": bool, "ca": str, "secret": str}
_TYPE_NAMES = {int: "a number", str: "text", bool: "true or false", list: "a list of text"}
_WANTED = {"addr": "a port number or HOST:PORT text", "host_header": "text or false",
           "allow_ip": "a list of CIDR texts"}


@dataclass(frozen=True)
class StartSettings:
    tunnels: tuple  # (name, ClientSettings) pairs, in the file's order
    inspect: InspectSettings = None  # None: no inspector
    debug: bool = False
    quiet: bool = False
    config_path: str = None


def start_settings(text, path, names=(), all_tunnels=False, env=None, config=None, inspect_address=None,
                   no_inspect=False, inspect_keep=None, debug=False, quiet=False, read_ca=None, resolves=None):
    """The settings of the tunnels `names` (every one with `all_tunnels`) of the file at
    `path` holding `text`: TOML, or YAML when `path` ends in .yaml or .yml.

    `inspect_address`, `no_inspect` and `inspect_keep` are the command line's --inspect,
    --no-inspect and --inspect-keep, which win over the file's [inspect].  `read_ca(path)`
    gives the PEM text of a tunnel's `ca` file (tpot.client.files.read_ca_file);
    `resolves(name)` whether an addr that is a bare word is a host name (as for tpot http).
    """
    document = parse_document(text, path)
    _check_keys(document, TOP_KEYS, path)
    tunnels = document.get("tunnels")
    if not isinstance(tunnels, dict) or not tunnels:
        raise ClientError(f"{path}: no tunnels; add a [tunnels.NAME] section with proto and addr.")
    where = {str(name): f'{path}: tunnel "{name}"' for name in tunnels}
    tunnels = {str(name): _values(section, where[str(name)]) for name, section in tunnels.items()}
    chosen = _chosen(tunnels, names, all_tunnels, path)
    defaults = {key: _checked(document, key, path) for key in ("server", "auth_key")}
    _check_server(defaults["server"], env or {}, config or {}, path)
    # Of config.json only what every tunnel shares: its subdomain or httpHost would be
    # asked for by each tunnel at once.
    config = {key: value for key, value in (config or {}).items() if key in SHARED_CONFIG_KEYS}
    common = dict(env=env, config=config, debug=debug, quiet=quiet, resolves=resolves)
    made = tuple((name, _tunnel(tunnels[name], where[name], defaults, common, read_ca, path)) for name in chosen)
    inspect = _inspect(document.get("inspect", {}), f"{path}: [inspect]", inspect_address, no_inspect, inspect_keep)
    return StartSettings(made, inspect, debug, quiet, path)


def parse_document(text, path):
    """The file's contents as a dict: TOML, or YAML for a .yaml/.yml path."""
    if path.endswith((".yaml", ".yml")):
        document = _yaml(text, path)
    else:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ClientError(f"{path}: not valid TOML: {error}.") from None
    if not isinstance(document, dict):
        raise ClientError(f"{path}: must hold settings and a tunnels section, not {type(document).__name__}.")
    return document


def _yaml(text, path):
    import yaml  # only for a YAML file: a TOML one needs nothing beyond the standard library

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ClientError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', None) or error}.") from None


def _chosen(tunnels, names, all_tunnels, path):
    known = ", ".join(tunnels)
    if all_tunnels:
        return list(tunnels)
    if not names:
        raise ClientError(f"Name the tunnels to start, or use --all: {path} has {known}.")
    unknown = [name for name in names if name not in tunnels]
    if unknown:
        raise ClientError(f'{path} has no tunnel "{unknown[0]}" (it has {known}).')
    return list(dict.fromkeys(names))


def _check_server(server, env, config, path):
    # client_settings would name -t, which tpot start does not take.
    try:
        configured_server(server, env, config)
    except ClientError:
        raise ClientError(f'{path}: no server given; add server = "https://..." to it, set {ENV_SERVER}'
                          f" or tpotServer in {CONFIG_PATH}.") from None


def _inspect(section, where, address, disabled, keep):
    """The file's [inspect] (or `inspect = false`) under the command line's options."""
    if section is False:
        section = {"addr": False}
    if not isinstance(section, dict):
        raise ClientError(f"{where} must be a table with addr and keep, or inspect = false.")
    _check_keys(section, INSPECT_KEYS, where)
    from_file = section.get("addr")
    if from_file is True or not isinstance(from_file, (int, str, type(None))):
        raise ClientError(f"{where}: addr must be a port number, HOST:PORT text or false, not {_shown(from_file)}.")
    keep_from_file = _checked(section, "keep", where)
    try:
        settings = inspect_settings(None if from_file is None or from_file is False else str(from_file),
                                    keep=keep_from_file, address_name="addr", keep_name="keep")
    except ClientError as error:
        raise ClientError(f"{where}: {error}") from None
    given = inspect_settings(address, disabled, keep)
    if given is None or (address is None and from_file is False):
        return None
    if address is not None:
        settings = dataclasses.replace(settings, host=given.host, port=given.port, search=given.search)
    return settings if keep is None else dataclasses.replace(settings, keep=given.keep)


def _values(section, where):
    """A tunnel's section with every key known and of its type (checked for every tunnel
    of the file, started or not, so a mistake shows at once), proto filled in."""
    if not isinstance(section, dict):
        raise ClientError(f"{where} must be a table with proto and addr.")
    section = {key: value for key, value in section.items() if value is not None}  # YAML's `key:` is unset
    proto = section.get("proto", HTTP)
    if proto not in (HTTP, TCP):
        raise ClientError(f"{where}: proto must be http or tcp, not {_shown(proto)}.")
    _check_tunnel_keys(section, proto, where)
    if "addr" not in section:
        raise ClientError(f"{where}: addr is missing; give the local port or host:port to expose.")
    values = {key: _checked(section, key, where) for key in section}
    if values.get("host_header") is True:
        raise ClientError(f"{where}: host_header must be {_WANTED['host_header']}, not true.")
    allow_ip = values.get("allow_ip", ())
    if isinstance(allow_ip, list) and not all(isinstance(cidr, str) for cidr in allow_ip):
        raise ClientError(f"{where}: allow_ip must be {_WANTED['allow_ip']}, not {_shown(allow_ip)}.")
    return dict(values, proto=proto)


def _tunnel(values, where, defaults, common, read_ca, path):
    shared = dict(common, **defaults, subdomain=values.get("subdomain"), pool=values.get("pool"),
                  max_conversations=values.get("max_conversations"))
    try:
        if values["proto"] == TCP:
            return client_settings(str(values["addr"]), kind=TCP, access_secret=values.get("secret"), **shared)
        return client_settings(str(values["addr"]), **_http_options(values, read_ca, path), **shared)
    except ClientError as error:
        message = str(error)
        raise ClientError(f"{where}: {message[:1].lower()}{message[1:]}") from None


def _http_options(values, read_ca, path):
    host_header = values.get("host_header")
    allow_ip = values.get("allow_ip", ())
    ca = values.get("ca")
    return dict(
        http_host=host_header or None, no_host_rewrite=host_header is False,
        no_forwarded_headers=values.get("forwarded_headers") is False, insecure=values.get("insecure", False),
        ca=read_ca(_beside(ca, path)) if ca else None, basic_auth=values.get("basic_auth"),
        allow_ip=[allow_ip] if isinstance(allow_ip, str) else allow_ip,
    )


def _beside(name, path):
    """A relative file name in the file of tunnels is relative to that file's folder."""
    if os.path.isabs(name) or name.startswith("~"):
        return name
    return os.path.join(os.path.dirname(path), name)


def _check_tunnel_keys(section, proto, where):
    other, other_proto = (TCP_KEYS, TCP) if proto == HTTP else (HTTP_KEYS, HTTP)
    for key in section:
        if key in other:
            raise ClientError(f"{where}: {key} applies only to {other_proto} tunnels (proto = \"{other_proto}\").")
    _check_keys(section, COMMON_KEYS + (HTTP_KEYS if proto == HTTP else TCP_KEYS), where)


def _check_keys(section, known, where):
    for key in section:
        if key not in known:
            raise ClientError(f'{where}: unknown key "{key}" (known: {", ".join(known)}).')


def _checked(section, key, where):
    """section[key] (None when absent), if it has the type the key takes."""
    value = section.get(key)
    kinds = _TYPES[key] if isinstance(_TYPES[key], tuple) else (_TYPES[key],)
    if value is not None and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
        wanted = _WANTED.get(key) or " or ".join(_TYPE_NAMES[kind] for kind in kinds)
        raise ClientError(f"{where}: {key} must be {wanted}, not {_shown(value)}.")
    return value


def _shown(value):
    """`value` as the file would spell it (true, "text", [1, 2])."""
    return json.dumps(value, default=str)
