"""Ports and child processes on 127.0.0.1, shared by the e2e tests and the benchmark.

Pure helpers, no pytest fixtures: a free port, waiting for a port, an environment without
the outer settings, starting a child (SIGINT at its default) and stopping it (SIGTERM, then
SIGKILL), and the open-file limit children inherit.
"""

import os
import resource
import signal
import socket
import subprocess
import time

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0

# Every setting the server (DOMAIN, AUTH_KEY, PORT, METRICS_TOKEN, the cluster's) or a client (TPOT_*)
# reads from its environment: none may leak into the processes under test from outside.
LEAKY = (
    "DOMAIN", "AUTH_KEY", "PORT", "METRICS_TOKEN", "REDIS_URL", "CLUSTER_SECRET", "TPOT_ADVERTISE",
    "TPOT_SERVER", "TPOT_AUTH_KEY", "TPOT_ACCESS_SECRET", "TPOT_BASIC_AUTH", "TPOT_POOL",
)


def pick_free_port(host=HOST):
    """A TCP port that nothing uses right now on any address, so that `host` can take it.

    Checked on the wildcard address, as the server binds by default (`::`, dual stack): a
    port free on 127.0.0.1 may still be the local port of a connection from 127.0.0.2, or
    of one in TIME_WAIT, which a later bind to every address would collide with."""
    family = socket.AF_INET6 if ":" in host or socket.has_ipv6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind(("::" if family == socket.AF_INET6 else "", 0))
            return s.getsockname()[1]
    except OSError:  # no IPv6 here after all
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            return s.getsockname()[1]


def pick_free_ports_in_a_row(count=2, attempts=50):
    """The first of `count` consecutive free ports (`--workers` takes the next peer ports)."""
    for _ in range(attempts):
        first = pick_free_port()
        try:
            for port in range(first + 1, first + count):
                with socket.socket() as probe:
                    probe.bind((HOST, port))
            return first
        except OSError:
            continue
    raise RuntimeError(f"no {count} free ports in a row")


def wait_for_port(port, proc, timeout=START_TIMEOUT, host=HOST):
    """True once `port` accepts a connection; False if `proc` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def clean_env(home):
    """This process's environment without LEAKY, unbuffered, with HOME at `home`."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKY}
    env["PYTHONUNBUFFERED"] = "1"
    env["HOME"] = str(home)  # no ~/.tpot/config.json from the real home
    return env


def default_sigint():
    """In the child, before exec: SIGINT at its default even if we were started with it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_process(args, cwd, env, stdout, stderr=subprocess.STDOUT, stdin=None,
                  new_session=False, **popen):
    """Popen(args) in `cwd` with `env`; SIGINT at its default in the child. With
    `new_session`, the child leads its own process group, which stop_process kills whole."""
    return subprocess.Popen(
        [str(a) for a in args], cwd=str(cwd), env=env, stdin=stdin, stdout=stdout, stderr=stderr,
        start_new_session=new_session, preexec_fn=default_sigint, **popen,
    )


def stop_process(proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
    """Send `sig` and wait; after `timeout` s, SIGKILL (its whole group if it leads one)."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        proc.wait(timeout)


def kill(proc):
    """SIGKILL `proc`, with its process group if it leads one (still unreaped, so the id is its)."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:
        pass


def raise_nofile_limit():
    """Soft RLIMIT_NOFILE up to the hard limit (processes started afterwards inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted
