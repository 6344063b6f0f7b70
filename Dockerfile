# TPoT server image. Configured exactly like the original image, by environment:
#   docker build -t tpot .
#   docker run -d -p 3000:3000 -e DOMAIN=example.com [-e AUTH_KEY=...] [-e PORT=3000] \
#       --stop-timeout 40 tpot
#
# Built, run and tested by `make test` (tests/container/): health check, a tunnel through
# it, AUTH_KEY, uid 10001 with a read-only root filesystem, drain on `docker stop`, two
# containers as a cluster. Keep its install step the same as `make run`'s: a pip install of
# this package (setup.py) and nothing else -- here as wheels built in the first stage and
# installed in the second. tests/e2e/test_deploy.py checks that the two agree.

# ---- stage 1: build wheels, install them into a virtualenv ----------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what setup.py packages (.dockerignore keeps the rest of the checkout out).
COPY setup.py README.md ./
COPY tpot ./tpot
COPY twisted/plugins/tpot_plugin.py ./twisted/plugins/tpot_plugin.py
# The package and every dependency as wheels, then installed from those wheels only.
RUN pip wheel --wheel-dir /wheels . \
 && python -m venv /opt/tpot/venv \
 && /opt/tpot/venv/bin/pip install --no-index /wheels/*.whl
# What only installing or testing needs stays behind: pip and setuptools (22 MB), and the
# libraries' own test suites (Twisted's alone is 10 MB); nothing the server imports.
RUN /opt/tpot/venv/bin/pip uninstall -y -q pip setuptools \
 && find /opt/tpot/venv/lib -depth -type d \( -name test -o -name tests \) -path '*/site-packages/*' \
         -exec rm -rf {} +
# twistd caches its plugin list next to the plugins; build that cache here, so the
# non-root user (with a read-only root filesystem, even) never needs to write it.
RUN /opt/tpot/venv/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

# ---- stage 2: slim runtime: the virtualenv, no wheels, no sources, no build tools ------
FROM python:3.11-slim-bookworm
ENV PATH=/opt/tpot/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=3000
RUN groupadd --system --gid 10001 tpot \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin tpot
COPY --from=build /opt/tpot/venv /opt/tpot/venv
# The server also reads a .env file from its working directory: this one is empty and
# read-only unless you mount one (-v ./tpot.env:/srv/tpot/.env:ro).
WORKDIR /srv/tpot
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 3000

# /healthz answers 200 "ok" while serving and 503 while draining. The server routes by
# Host, so ask for the bare DOMAIN on the local port. curl is not in slim images.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import http.client as h, os, sys; c = h.HTTPConnection('127.0.0.1', int(os.environ.get('PORT') or 3000), timeout=4); c.request('GET', '/healthz', headers={'Host': os.environ.get('DOMAIN', 'localhost')}); sys.exit(0 if c.getresponse().status == 200 else 1)"]

# On SIGTERM the server stops accepting, turns /healthz to 503 and drains open connections
# for up to --drain-timeout seconds (default 30). Docker's stop timeout defaults to only
# 10 s before SIGKILL: run with --stop-timeout 40 (compose: stop_grace_period: 40s), or
# append a shorter --drain-timeout to the command. Keep the drain below the stop timeout.
STOPSIGNAL SIGTERM
# --pidfile= : a stale pid file would otherwise stop a restarted container.
# Settings: DOMAIN, AUTH_KEY and PORT from the environment; extra flags may be appended:
#   docker run ... tpot twistd -n --pidfile= tpot --max-tunnels 100
CMD ["twistd", "-n", "--pidfile=", "tpot"]
