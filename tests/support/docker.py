"""Docker for the container tests: the daemon, a stand-in base image, our image.

Image registries are out of reach here, so `FROM python:3.11-slim-bookworm` cannot be
pulled: when no image of that tag exists, one is made from Debian's packages (debootstrap,
about a minute) and kept under that tag, so later runs on the same machine reuse it. It
has what the Dockerfile uses of the real one: python and pip on PATH, a pip that may
install (no EXTERNALLY-MANAGED marker), and this machine's CA bundle, so that pip inside
the build reaches the package index as the host does.  The image itself is built from the
Dockerfile as it is, with --network host (everything stays on loopback).
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.tools import require_tool

REPO = Path(__file__).resolve().parents[2]
BASE = "python:3.11-slim-bookworm"
IMAGE = "tpot:test"
DAEMON_TIMEOUT = 60
BUILD_TIMEOUT = 600
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
STAND_IN = f"""FROM tpot-standin-root:bookworm
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN ln -s /usr/bin/python3 /usr/local/bin/python && ln -s /usr/bin/pip3 /usr/local/bin/pip \\
 && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8
LABEL org.tpot.stand-in-for="{BASE}"
CMD ["python3"]
"""
# What a root file system from debootstrap has that an image need not.
PRUNED = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale",
          "usr/share/info")


def docker(*args, timeout=120, check=True, **kwargs):
    """`docker ARGS`; its CompletedProcess (text), failing the test with its output if `check`."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        pytest.fail(f"docker {' '.join(args[:3])} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
    return done


def start_daemon(log_dir):
    """A Docker daemon to talk to: the one running, or dockerd started in the background
    (left running, as a system service would be); skipped if none can be."""
    require_tool("docker", "docker.io")
    if docker("info", check=False, timeout=30).returncode == 0:
        return
    dockerd = require_tool("dockerd", "docker.io")
    log = open(Path(log_dir) / "dockerd.log", "wb")
    subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                     start_new_session=True)
    deadline = time.monotonic() + DAEMON_TIMEOUT
    while time.monotonic() < deadline:
        if docker("info", check=False, timeout=30).returncode == 0:
            return
        time.sleep(0.5)
    pytest.skip(f"dockerd did not start within {DAEMON_TIMEOUT} s: {Path(log.name).read_text()[-1000:]}")


def has_image(tag):
    return docker("image", "inspect", tag, check=False).returncode == 0


def debian_mirror():
    """The Debian mirror this machine's apt uses (deb822 sources), else Debian's own."""
    try:
        for line in DEBIAN_SOURCES.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    except OSError:
        pass
    return "http://deb.debian.org/debian"


def ensure_base():
    """`BASE`, as pulled earlier or as the stand-in described above (made once)."""
    if has_image(BASE):
        return
    debootstrap = require_tool("debootstrap", "debootstrap")
    with tempfile.TemporaryDirectory(prefix="tpot-base-") as scratch:
        root = Path(scratch) / "root"
        made = subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3,python3-venv,python3-pip,ca-certificates",
             "bookworm", str(root), debian_mirror()],
            capture_output=True, text=True, timeout=BUILD_TIMEOUT,
        )
        if made.returncode != 0:
            pytest.fail(f"debootstrap failed: {(made.stderr or made.stdout)[-2000:]}")
        for pruned in PRUNED:
            shutil.rmtree(root / pruned, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        docker("import", "-", "tpot-standin-root:bookworm", stdin=tar.stdout, timeout=BUILD_TIMEOUT)
        tar.wait(30)
        context = Path(scratch) / "context"
        context.mkdir()
        shutil.copy(CA_BUNDLE, context / CA_BUNDLE.name)
        (context / "Dockerfile").write_text(STAND_IN)
        docker("build", "-q", "-t", BASE, str(context), timeout=BUILD_TIMEOUT)


def build_image():
    """Our image from the Dockerfile as it is; its tag."""
    ensure_base()
    docker("build", "--network", "host", "-q", "-t", IMAGE, str(REPO), timeout=BUILD_TIMEOUT,
           env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return IMAGE


def image_size(tag):
    return int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())
