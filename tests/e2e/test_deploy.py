"""The deployment files: Dockerfile, .dockerignore, deploy/tpot.service, deploy/nginx,
deploy/haproxy, deploy/kubernetes, compose.yaml.

The image itself is built and run by test_container_e2e.py; here the files are checked
against what the server needs, and with the real tools: `systemd-analyze verify` and
`security` for the unit, `nginx -t` and `haproxy -c` for those samples, the Kubernetes
API's schemas (kubernetes-validate, offline) for the manifests, `docker-compose config` for
compose.yaml (`make test` installs the programs; without them those tests skip, and under
CI=true fail).  Each real-tool check is shown to reject a broken copy, so that a tool that
checks nothing cannot pass.  The Dockerfile's HEALTHCHECK command is run against a stand-in
server too.
"""

import configparser
import fnmatch
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.support.tools import require_tool
from tpot.server.config import Limits, default_listen, server_settings
from tpot.server.tap import Options

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
DRAIN_TIMEOUT = Limits().drain_timeout  # the server's --drain-timeout default, in seconds
EXAMPLE_DOMAIN = "example.com"
INSTALLED_TWISTD = "/opt/tpot/venv/bin/twistd"


def read(path):
    return (REPO / path).read_text(encoding="utf-8")


def seconds(value):
    """A systemd/Kubernetes time span such as 45, 45s, 1min 30s or 2m, in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0
    for number, unit in re.findall(r"(\d+)\s*([a-z]*)", value.strip()):
        total += int(number) * units[unit]
    return total


# systemd unit.


def unit_parser(text):
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str  # directive names are case-sensitive
    parser.read_string(text)
    return parser


def unit_values(text, key):
    """Every value a (possibly repeated) directive has, in order."""
    return [line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith(f"{key}=")]


def check_unit_statically(text):
    unit = unit_parser(text)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    for key in ("ExecStart", "EnvironmentFile", "Restart", "KillSignal", "TimeoutStopSec", "DynamicUser",
                "ProtectSystem", "CapabilityBoundingSet", "RestrictAddressFamilies", "SystemCallFilter"):
        assert key in service, f"tpot.service has no {key}="
    assert service["ExecStart"] == f"{INSTALLED_TWISTD} -n --pidfile= tpot"
    assert service["EnvironmentFile"] == "/etc/tpot/env"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert seconds(service["TimeoutStopSec"]) > DRAIN_TIMEOUT
    for key in ("DynamicUser", "NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectControlGroups", "LockPersonality", "MemoryDenyWriteExecute",
                "RestrictNamespaces", "RestrictSUIDSGID", "PrivateDevices"):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict"
    assert service["CapabilityBoundingSet"] == ""
    assert service.get("AmbientCapabilities", "") == ""
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert unit_values(text, "SystemCallFilter")[0] == "@system-service"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # How to allow a port below 1024, and how to install what ExecStart runs.
    assert re.search(r"^#\s*AmbientCapabilities=CAP_NET_BIND_SERVICE$", text, re.M)
    assert re.search(r"^#\s*CapabilityBoundingSet=CAP_NET_BIND_SERVICE$", text, re.M)
    assert "python3 -m venv /opt/tpot/venv && /opt/tpot/venv/bin/pip install /path/to/checkout" in text


def systemd_analyze(tmp_path, text, *args):
    """`systemd-analyze ARGS` on a copy of the unit `text`: (exit code, output lines about it)."""
    analyze = require_tool("systemd-analyze", "systemd")
    # verify insists that ExecStart is executable: point it at this checkout's twistd.
    twistd = Path(sys.executable).with_name("twistd")
    assert twistd.exists() and " " not in str(twistd), twistd
    copy = tmp_path / "tpot.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED_TWISTD} ", f"ExecStart={twistd} "), encoding="utf-8")
    result = subprocess.run([analyze, *args, str(copy)], capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in output if "tpot" in line], result.stdout


def test_systemd_unit_statically():
    check_unit_statically(read("deploy/tpot.service"))


def test_systemd_analyze_verifies_the_unit(tmp_path):
    code, about_unit, _ = systemd_analyze(tmp_path, read("deploy/tpot.service"), "verify", "--man=no")
    assert code == 0 and not about_unit, about_unit


@pytest.mark.parametrize("breakage, complaint", [
    (("Restart=on-failure", "Restart=sometimes"), "Failed to parse service restart specifier"),
    (("KillSignal=SIGTERM", "KillSignal=SIGTERM\nKillSignl=SIGINT"), "Unknown key 'KillSignl'"),
    (("ExecStart=", "ExecStart=/nonexistent"), "is not executable"),
], ids=["bad-value", "misspelt-key", "missing-program"])
def test_systemd_analyze_rejects_a_broken_unit(tmp_path, breakage, complaint):
    # The control for the test above: verify really reads this unit and reports on it.
    text = read("deploy/tpot.service")
    assert breakage[0] in text
    broken = text.replace(breakage[0], breakage[1], 1)
    code, about_unit, _ = systemd_analyze(tmp_path, broken, "verify", "--man=no")
    assert any(complaint in line for line in about_unit), about_unit
    if complaint == "is not executable":
        assert code != 0


def exposure(tmp_path, text):
    code, _, stdout = systemd_analyze(tmp_path, text, "security", "--offline=yes", "--no-pager")
    score = re.search(r"Overall exposure level for tpot\.service: ([\d.]+)", stdout)
    assert code == 0 and score, stdout
    return float(score.group(1))


def test_systemd_security_exposure_is_low(tmp_path):
    # The sandbox's exposure score, computed offline (systemd 250+; Debian 12 has 252).
    text = read("deploy/tpot.service")
    score = exposure(tmp_path, text)
    assert score <= 2.0, score
    # Without the sandboxing directives the same unit scores far worse: the score is real.
    bare = "\n".join(line for line in text.splitlines()
                     if not re.match(r"(Protect|Private|Restrict|NoNewPrivileges|DynamicUser|CapabilityBoundingSet"
                                     r"|SystemCallFilter|MemoryDeny|LockPersonality)", line))
    assert exposure(tmp_path, bare) > score + 4, bare


def test_env_example_configures_the_server():
    text = read("deploy/env.example")
    env = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            assert key and not key.startswith("export "), line
            env[key] = value
    assert set(env) <= {"DOMAIN", "AUTH_KEY", "PORT"}
    settings = server_settings(env=env)
    assert settings.domain == EXAMPLE_DOMAIN and settings.listen == default_listen(3000) and settings.auth_key is None
    assert re.search(r"^#\s*AUTH_KEY=", text, re.M)


# nginx.


def test_nginx_conf_statically():
    text = read("deploy/nginx/tpot.conf")
    active = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{\s*default upgrade;\s*'' +close;\s*\}", active)
    assert active.count(f"server_name {EXAMPLE_DOMAIN} *.{EXAMPLE_DOMAIN};") == 2
    assert "return 301 https://$host$request_uri;" in active
    assert re.search(r"listen 443 ssl;", active) and re.search(r"listen 80;", active)
    for directive in (
        f"ssl_certificate /etc/letsencrypt/live/{EXAMPLE_DOMAIN}/fullchain.pem;",
        f"ssl_certificate_key /etc/letsencrypt/live/{EXAMPLE_DOMAIN}/privkey.pem;",
        "client_max_body_size 0;",
        "proxy_http_version 1.1;",
        "proxy_buffering off;",
        "proxy_request_buffering off;",
        "proxy_read_timeout 3600s;",
        "proxy_send_timeout 3600s;",
        "proxy_set_header Host $host;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
    ):
        assert directive in re.sub(r"[ \t]+", " ", active), directive
    # The PROXY-protocol variant, commented out, and the listener it needs.
    assert re.search(r"^#\s*proxy_protocol\s+on;", text, re.M)
    assert re.search(r"^#\s*stream \{", text, re.M)
    assert "--listen haproxy:tcp:3000" in text


def self_signed_certificate(directory):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, EXAMPLE_DOMAIN)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(EXAMPLE_DOMAIN), x509.DNSName(f"*.{EXAMPLE_DOMAIN}")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "fullchain.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def nginx_test(tmp_path, conf):
    """`nginx -t` on the conf `conf` (its certificates made here, its paths in tmp_path)."""
    nginx = require_tool("nginx", "nginx-light")
    self_signed_certificate(tmp_path)
    conf = conf.replace(f"/etc/letsencrypt/live/{EXAMPLE_DOMAIN}", str(tmp_path))
    (tmp_path / "tpot.conf").write_text(conf, encoding="utf-8")
    temp = " ".join(f"{kind}_temp_path {tmp_path}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                        "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n access_log off;\n {temp}\n include {tmp_path}/tpot.conf;\n}}\n", encoding="utf-8")
    return subprocess.run([nginx, "-t", "-q", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                           "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True, timeout=60)


def test_nginx_accepts_the_conf(tmp_path):
    result = nginx_test(tmp_path, read("deploy/nginx/tpot.conf"))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("breakage, complaint", [
    ((r"proxy_buffering(\s+)off;", r"proxy_buffering\1sometimes;"), "invalid value \"sometimes\""),
    ((r"proxy_http_version(\s+)1\.1;", r"proxy_http_versoin\1 1.1;"), "unknown directive \"proxy_http_versoin\""),
], ids=["bad-value", "misspelt-directive"])
def test_nginx_rejects_a_broken_conf(tmp_path, breakage, complaint):
    # The control for the test above: nginx -t really parses this file.
    conf, count = re.subn(*breakage, read("deploy/nginx/tpot.conf"), count=1)
    assert count == 1, breakage
    result = nginx_test(tmp_path, conf)
    assert result.returncode != 0 and complaint in result.stderr and "tpot.conf" in result.stderr, result.stderr


# HAProxy in front of a cluster.


def haproxy_check(tmp_path, text):
    config = tmp_path / "tpot.cfg"
    config.write_text(text, encoding="utf-8")
    return subprocess.run([require_tool("haproxy", "haproxy"), "-c", "-f", str(config)],
                          capture_output=True, text=True, timeout=30)


def test_haproxy_cfg_balances_over_nodes_with_health_checks_and_proxy_headers(tmp_path):
    text = read("deploy/haproxy/tpot.cfg")
    assert "balance roundrobin" in text and "timeout tunnel" in text
    # The nodes' --domain, from HAProxy's environment (compose.yaml sets it).
    assert 'http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host "${TPOT_DOMAIN-example.com}"' in text
    servers = [line for line in text.splitlines() if line.strip().startswith("server ")]
    assert len(servers) == 3 and all("send-proxy-v2 check port 3002" in line for line in servers)
    result = haproxy_check(tmp_path, text)
    assert result.returncode == 0 and "Configuration file is valid" in result.stdout, result.stdout + result.stderr


def test_haproxy_rejects_a_broken_cfg(tmp_path):
    # The control for the test above: haproxy -c really parses this file.
    result = haproxy_check(tmp_path, read("deploy/haproxy/tpot.cfg").replace("balance roundrobin", "balance sometimes"))
    assert result.returncode != 0 and "balance only supports" in result.stdout + result.stderr


# Docker Compose: a 3-node cluster with Redis and HAProxy.


def compose_config(env):
    compose = require_tool("docker-compose", "docker-compose")
    return subprocess.run([compose, "-f", str(REPO / "compose.yaml"), "config"], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env={"PATH": os.environ["PATH"], **env})


def test_compose_runs_three_nodes_of_one_cluster_behind_haproxy(monkeypatch, tmp_path):
    secret = "s" * 40
    result = compose_config({"CLUSTER_SECRET": secret, "DOMAIN": EXAMPLE_DOMAIN})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    nodes = ["tpot-1", "tpot-2", "tpot-3"]
    assert set(services) == {"redis", "haproxy", *nodes}
    for node in nodes:
        service = services[node]
        assert service["build"]["context"] == str(REPO) and service["read_only"] is True
        assert seconds(service["stop_grace_period"]) > DRAIN_TIMEOUT
        assert service["environment"] == {"DOMAIN": EXAMPLE_DOMAIN, "AUTH_KEY": "", "CLUSTER_SECRET": secret,
                                          "REDIS_URL": "redis://redis:6379/0"}
        command = service["command"]
        assert command[:4] == ["twistd", "-n", "--pidfile=", "tpot"]
        # The server takes that command line in that environment (.env aside).
        for name, value in service["environment"].items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        options = Options()
        options.parseOptions(command[4:])
        settings = options["settings"]
        assert settings.listen == ["haproxy:tcp:3000", "tcp:3002"] and settings.domain == EXAMPLE_DOMAIN
        assert (settings.cluster.node_id, settings.cluster.advertise) == (node, f"{node}:3001")
    haproxy = services["haproxy"]
    assert haproxy["environment"] == {"TPOT_DOMAIN": EXAMPLE_DOMAIN}
    assert haproxy["volumes"] == [f"{REPO}/deploy/haproxy/tpot.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]
    # HAProxy's servers are these services, on the ports their nodes listen on.
    assert re.findall(r"server node\d (\S+) send-proxy-v2 check port 3002", read("deploy/haproxy/tpot.cfg")) == [
        f"{node}:3000" for node in nodes]


def test_compose_refuses_to_run_without_a_cluster_secret():
    result = compose_config({})
    assert result.returncode != 0 and "set CLUSTER_SECRET" in result.stderr


# Kubernetes: the manifests against the API's schemas (kubernetes-validate, offline), and
# what they must say, as text.
KUBERNETES_VERSION = "1.30"


def k8s_documents(name):
    return [document for document in yaml.safe_load_all(read(f"deploy/kubernetes/{name}")) if document]


@pytest.mark.parametrize("name", sorted(path.name for path in K8S.glob("*.yaml")))
def test_kubernetes_manifests_are_valid_against_the_schemas(name):
    for document in k8s_documents(name):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("breakage", [
    lambda spec: spec.update(replicas="three"),
    lambda spec: spec.update(replicaz=3),  # strict: a field the API does not have
    lambda spec: spec.pop("selector"),
], ids=["wrong-type", "unknown-field", "missing-required"])
def test_kubernetes_validation_rejects_a_broken_deployment(breakage):
    # The control for the test above: the schemas really are checked.
    (deployment,) = k8s_documents("deployment.yaml")
    breakage(deployment["spec"])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def block(text, key):
    """The lines nested under the first line `key:` (YAML block style), as text."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() in (f"{key}:", f"- {key}:"):
            indent = len(line) - len(line.lstrip(" -"))
            nested = []
            for following in lines[index + 1:]:
                if following.strip() and len(following) - len(following.lstrip(" ")) <= indent:
                    break
                nested.append(following)
            return "\n".join(nested)
    raise AssertionError(f"no {key}: block")


def scalar(text, key):
    """The value of the first `key: value` line."""
    found = re.search(rf"^[ -]*{re.escape(key)}:[ \t]*(.+?)[ \t]*(#.*)?$", text, re.M)
    assert found, f"no {key}:"
    return found.group(1).strip("\"'")


def manifest(name):
    text = read(f"deploy/kubernetes/{name}")
    assert "\t" not in text, f"{name}: YAML does not allow tabs"
    assert re.search(r"^apiVersion: \S+$", text, re.M) and re.search(r"^kind: \w+$", text, re.M)
    return text


def env_value(text, name):
    found = re.search(rf"- name: {name}\n(\s+)(value|valueFrom):(.*(?:\n\1\s.*)*)", text)
    assert found, f"no {name} in env"
    return found.group(2), found.group(3)


def test_kubernetes_deployment():
    text = manifest("deployment.yaml")
    assert scalar(text, "kind") == "Deployment"
    assert int(scalar(text, "replicas")) == 3
    assert re.search(r"^\s*#.*share their tunnels through Redis", text, re.M)  # how three can be one
    assert int(scalar(text, "terminationGracePeriodSeconds")) > DRAIN_TIMEOUT
    kind, domain = env_value(text, "DOMAIN")
    assert kind == "value" and domain.strip().strip("\"'") == EXAMPLE_DOMAIN
    kind, auth = env_value(text, "AUTH_KEY")
    assert kind == "valueFrom" and "secretKeyRef:" in auth
    secret = manifest("secret.example.yaml")
    assert scalar(secret, "kind") == "Secret"
    assert scalar(auth, "name") == scalar(secret, "name")
    assert re.search(rf"^\s+{re.escape(scalar(auth, 'key'))}: ", block(secret, "stringData"), re.M)
    assert json.loads(scalar(text, "command")) == ["twistd", "-n", "--pidfile=", "tpot", "--node-id", "$(POD_NAME)"]
    port_name = scalar(block(text, "ports"), "name")
    assert int(scalar(block(text, "ports"), "containerPort")) == 3000
    for probe in ("readinessProbe", "livenessProbe"):
        get = block(block(text, probe), "httpGet")
        assert scalar(get, "path") == "/healthz"
        assert scalar(get, "port") == port_name  # the named container port, not a number to keep in step
        assert scalar(get, "httpHeaders") == f"[{{name: Host, value: {EXAMPLE_DOMAIN}}}]"
    resources = block(text, "resources")
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(re.findall(r"^\s+(\w+):", block(resources, section), re.M))
    container = block(text, "containers")
    security = block(container, "securityContext")
    assert scalar(security, "runAsNonRoot") == "true"
    assert int(scalar(security, "runAsUser")) == 10001
    assert scalar(security, "readOnlyRootFilesystem") == "true"
    assert scalar(security, "allowPrivilegeEscalation") == "false"
    assert scalar(block(security, "capabilities"), "drop") == '["ALL"]'
    assert scalar(block(security, "seccompProfile"), "type") == "RuntimeDefault"


def field_ref(text, name):
    kind, value = env_value(text, name)
    assert kind == "valueFrom", name
    return scalar(block(value, "fieldRef"), "fieldPath")


def test_kubernetes_replicas_form_one_cluster():
    text = manifest("deployment.yaml")
    secret = manifest("secret.example.yaml")
    for name, key in (("REDIS_URL", "redis-url"), ("CLUSTER_SECRET", "cluster-secret")):
        kind, value = env_value(text, name)
        assert kind == "valueFrom" and scalar(value, "name") == scalar(secret, "name"), name
        assert scalar(value, "key") == key and "optional" not in value, name  # required, unlike auth-key
        assert re.search(rf"^\s+{key}: ", block(secret, "stringData"), re.M), key
    assert field_ref(text, "POD_NAME") == "metadata.name"
    assert field_ref(text, "POD_IP") == "status.podIP"
    # Kubernetes expands $(VAR) only from variables defined earlier in the list.
    assert text.index("- name: POD_IP") < text.index("- name: TPOT_ADVERTISE")
    kind, advertise = env_value(text, "TPOT_ADVERTISE")
    assert kind == "value" and advertise.strip().strip('"') == "$(POD_IP):3001"
    ports = dict(re.findall(r"- name: (\w+)\n\s+containerPort: (\d+)", block(text, "ports")))
    assert ports == {"http": "3000", "peer": "3001"}  # 3001: the server's default --peer-listen
    strategy = block(text, "strategy")
    assert scalar(strategy, "type") == "RollingUpdate" and scalar(strategy, "maxUnavailable") == "1"
    assert scalar(block(text, "topologySpreadConstraints"), "topologyKey") == "kubernetes.io/hostname"
    label = scalar(block(text, "matchLabels"), "app.kubernetes.io/name")
    budget = manifest("poddisruptionbudget.yaml")
    assert scalar(budget, "kind") == "PodDisruptionBudget" and scalar(budget, "maxUnavailable") == "1"
    assert scalar(block(budget, "matchLabels"), "app.kubernetes.io/name") == label
    # The Redis to go with it: its Service is the host of the example redis-url.
    redis = manifest("redis.yaml")
    assert re.search(r"^#.*bring your own", redis, re.M)
    redis_host = re.search(r"redis-url: \"redis://([\w-]+):(\d+)/0\"", secret)
    assert redis_host and scalar(redis, "name") == redis_host.group(1)
    assert scalar(block(redis, "ports"), "port") == redis_host.group(2)
    assert "--save" in scalar(redis, "args")


def test_kubernetes_peer_port_is_open_to_the_tpot_pods_only():
    policy = manifest("networkpolicy.yaml")
    assert scalar(policy, "kind") == "NetworkPolicy"
    rules = block(policy, "ingress")
    public, peers = re.split(r"^    - from:$", rules, flags=re.M)
    assert scalar(public, "port") == "http" and "from" not in public
    assert scalar(peers, "port") == "peer"
    assert scalar(block(peers, "matchLabels"), "app.kubernetes.io/name") == "tpot"


def test_kubernetes_service_and_ingress():
    deployment = manifest("deployment.yaml")
    service = manifest("service.yaml")
    ingress = manifest("ingress.yaml")
    assert scalar(service, "kind") == "Service" and scalar(ingress, "kind") == "Ingress"
    label = scalar(block(deployment, "matchLabels"), "app.kubernetes.io/name")
    assert scalar(block(service, "selector"), "app.kubernetes.io/name") == label
    assert scalar(service, "targetPort") == scalar(block(deployment, "ports"), "name")
    service_name = scalar(service, "name")
    service_port = scalar(block(service, "ports"), "name")
    annotations = block(ingress, "annotations")
    for key, value in (("proxy-read-timeout", "3600"), ("proxy-send-timeout", "3600"), ("proxy-body-size", "0"),
                       ("proxy-buffering", "off"), ("proxy-request-buffering", "off")):
        assert re.search(rf'^\s+nginx\.ingress\.kubernetes\.io/{key}: "{value}"$', annotations, re.M), key
    assert re.search(r"^#.*[Ww]eb[Ss]ockets.*work by default", ingress, re.M)
    tls = block(ingress, "tls")
    assert scalar(tls, "secretName")
    assert {EXAMPLE_DOMAIN, f"*.{EXAMPLE_DOMAIN}"} <= {h.strip("\"'") for h in re.findall(r"^\s+- (\S+)$", tls, re.M)}
    rules = block(ingress, "rules")
    hosts = [h.strip("\"'") for h in re.findall(r"^\s+- host: (\S+)$", rules, re.M)]
    assert sorted(hosts) == sorted([EXAMPLE_DOMAIN, f"*.{EXAMPLE_DOMAIN}"])
    assert re.findall(r"^\s+name: (\S+)$", rules, re.M) == [service_name, service_port] * 2


# Docker.


def dockerfile_instructions():
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in read("Dockerfile").splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not current):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        instruction, _, arguments = current.strip().partition(" ")
        logical.append((instruction.upper(), " ".join(arguments.split())))
        current = ""
    assert not current, "Dockerfile ends in a continuation line"
    return logical


def only(instructions, name):
    found = [arguments for instruction, arguments in instructions if instruction == name]
    assert len(found) == 1, (name, found)
    return found[0]


def test_dockerfile_shape():
    instructions = dockerfile_instructions()
    stages = [arguments for instruction, arguments in instructions if instruction == "FROM"]
    assert len(stages) == 2
    build, runtime = stages
    assert re.fullmatch(r"python:[\d.]+-slim(-\w+)? AS build", build, re.I)
    assert re.fullmatch(r"python:[\d.]+-slim(-\w+)?", runtime)
    runtime_steps = instructions[[i for i, (name, _) in enumerate(instructions) if name == "FROM"][1]:]
    assert any(name == "COPY" and arguments.startswith("--from=build ") for name, arguments in runtime_steps)
    user = only(instructions, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    assert only(instructions, "EXPOSE") == "3000"
    assert only(instructions, "STOPSIGNAL") == "SIGTERM"
    assert json.loads(only(instructions, "CMD")) == ["twistd", "-n", "--pidfile=", "tpot"]
    assert "PORT=3000" in " ".join(arguments for name, arguments in instructions if name == "ENV")
    assert [name for name, _ in instructions].index("USER") > max(
        i for i, (name, _) in enumerate(instructions) if name == "RUN")  # nothing runs as root after USER
    # The drain must finish before docker stop's SIGKILL (10 s unless --stop-timeout): the
    # CMD keeps the default drain, so the documented `docker run` must give more time.
    assert "--drain-timeout" not in only(instructions, "CMD")
    usage = [line for line in read("Dockerfile").splitlines() if line.startswith("#")][:5]
    stop_timeouts = [int(n) for n in re.findall(r"--stop-timeout (\d+)", "\n".join(usage))]
    assert len(stop_timeouts) == 1 and stop_timeouts[0] > DRAIN_TIMEOUT, usage


def healthcheck_command():
    healthcheck = only(dockerfile_instructions(), "HEALTHCHECK")
    assert "/healthz" in healthcheck and "curl" not in healthcheck
    command = json.loads(healthcheck[healthcheck.index("CMD ") + 4:])
    assert command[:2] == ["python", "-c"] and len(command) == 3
    return command[2]


class StandIn(BaseHTTPRequestHandler):
    status = 200
    seen = []

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Host")))
        body = b"ok" if self.status == 200 else b"draining"
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False), (404, False)])
def test_dockerfile_healthcheck_asks_the_bare_domain(status, healthy):
    code = healthcheck_command()
    handler = type("Handler", (StandIn,), {"status": status, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"DOMAIN": "tunnels.example", "PORT": str(server.server_address[1])}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert handler.seen == [("/healthz", "tunnels.example")]
    assert result.returncode == (0 if healthy else 1), result.stderr


def test_dockerfile_healthcheck_fails_when_nothing_listens():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run([sys.executable, "-c", healthcheck_command()],
                            env={"DOMAIN": "tunnels.example", "PORT": str(port)}, capture_output=True, timeout=30)
    assert result.returncode == 1


def makefile_run_install():
    """What `make run` pip-installs: the argument of $(PIP) in its prerequisites' recipes."""
    makefile = read("Makefile")
    prerequisites = re.search(r"^run:(.*)$", makefile, re.M).group(1).split()
    installs = []
    for target in prerequisites:
        recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)*)", makefile, re.M).group(1)
        installs += re.findall(r"^\t\$\(PIP\)\s+(.*)$", recipe, re.M)
    assert installs, "make run installs nothing"
    return installs


def test_dockerfile_installs_what_make_run_installs():
    # make run: pip install -e . (the checkout's setup.py, no extras).
    targets = []
    for arguments in makefile_run_install():
        targets += [word for word in arguments.split() if not word.startswith("-") and "=" not in word]
    assert targets == ["."], targets
    # The image: the same package, built as a wheel from setup.py, and no extras either.
    instructions = dockerfile_instructions()
    runs = " && ".join(arguments for name, arguments in instructions if name == "RUN")
    wheel = re.search(r"pip wheel (?:--\S+ \S+ |--\S+ )*(\S+)", runs)
    assert wheel and wheel.group(1) == ".", runs
    assert re.search(r"pip install --no-index /wheels/\*\.whl", runs)
    assert "[" not in runs and "requirements" not in runs
    build_workdir = only(instructions[:[n for n, _ in instructions].index("RUN")], "WORKDIR")
    copied = set()
    for name, arguments in instructions:
        if name == "COPY" and not arguments.startswith("--from"):
            *sources, destination = arguments.split()
            copied.update(sources)
            assert destination.startswith("./") or destination.startswith(build_workdir)
    # Everything setup.py packages is copied into the build stage.
    setup = read("setup.py")
    assert "setup.py" in copied and "tpot" in copied
    for plugin in re.findall(r'"twisted\.plugins": \[([^\]]*)\]', setup)[0].replace('"', "").split(","):
        assert f"twisted/plugins/{plugin.strip()}" in copied
    # ...and .dockerignore lets it through.
    ignored = dockerignore_patterns()
    for source in copied:
        assert (REPO / source).exists(), source
        assert not dockerignored(source, ignored), source


def dockerignored(path, patterns):
    """Whether .dockerignore keeps `path` out: a pattern matching it or a folder above it."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    patterns = patterns + [pattern[3:] for pattern in patterns if pattern.startswith("**/")]
    return any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates for pattern in patterns)


def dockerignore_patterns():
    return [line.strip().rstrip("/") for line in read(".dockerignore").splitlines()
            if line.strip() and not line.startswith("#")]


def test_dockerignore():
    patterns = dockerignore_patterns()
    assert {".venv", ".git", ".env"} <= set(patterns)
    assert not any(pattern.startswith("!") for pattern in patterns)
    for path in (".venv/bin/python", ".git/HEAD", ".env", "tpot/__pycache__/x.pyc", "__pycache__/x.pyc"):
        assert dockerignored(path, patterns), path
    for path in ("setup.py", "tpot/tap.py", "twisted/plugins/tpot_plugin.py"):
        assert not dockerignored(path, patterns), path
