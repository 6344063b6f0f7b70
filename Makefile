# `make run` serves tunnels on localhost:3000; `make test` runs the whole suite; `make check`
# runs the fast part (tests/unit and tests/memory, no processes or sockets) in under a minute.
# Both create the virtualenv they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
DOMAIN ?= localhost
PORT ?= 3000
PIP = $(VENV)/bin/pip install -q --disable-pip-version-check

.PHONY: run test test-reference check test-tools test-lowest venv clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || { apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PIP) --upgrade pip setuptools wheel

# compat mode keeps the checkout on sys.path, which twistd needs to find twisted/plugins here.
$(VENV)/.run-deps: $(VENV)/bin/python setup.py
	$(PIP) -e . --config-settings editable_mode=compat
	touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps
	$(PIP) -e '.[test]' --config-settings editable_mode=compat
	touch $@

venv: $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(VENV)/bin/twistd -n --pidfile= tpot --domain $(DOMAIN) --port $(PORT)

# The programs some e2e tests run: nginx (nginx -t on deploy/nginx) and systemd-analyze
# (verify, security on deploy/tpot.service) in test_deploy.py, haproxy (a real PROXY-protocol
# sender, and haproxy -c), redis-server (clusters), docker.io, debootstrap (a stand-in base
# image, registries being out of reach) and docker-compose (compose.yaml) for the image's
# tests, which start dockerd themselves when no daemon runs, and chromium (/usr/bin/chromium,
# which Playwright drives for the inspector's page: tests/support/browser.py; Playwright
# itself comes with the test extras, and its own browser download is never used), and tmux (a
# real terminal for the client's status area: tests/e2e/test_console_e2e.py).  Installed
# with apt-get when missing and we are root; otherwise those tests skip, and fail under
# CI=true (tests/conftest.py).
TEST_PROGRAMS = nginx systemd-analyze haproxy redis-server docker dockerd debootstrap docker-compose chromium tmux
TEST_PACKAGES = nginx-light systemd haproxy redis-server docker.io debootstrap docker-compose chromium tmux
test-tools:
	@missing=; for program in $(TEST_PROGRAMS); do \
		command -v $$program >/dev/null || test -x /usr/sbin/$$program || missing="$$missing $$program"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TEST_PACKAGES); \
	else echo "make: missing:$$missing (apt-get install $(TEST_PACKAGES)); their tests will skip"; fi

test: $(VENV)/.test-deps test-tools
	$(VENV)/bin/python -m pytest

# The reference Node.js client against our cluster (tests/reference/: how to fetch it).
test-reference: $(VENV)/.test-deps test-tools
	TPOT_REFERENCE_CLIENT=$(TPOT_REFERENCE_CLIENT) $(VENV)/bin/python -m pytest -p no:cacheprovider -q tests/reference

check: $(VENV)/.test-deps
	$(VENV)/bin/python -m pytest tests/unit tests/memory

# `make test-lowest` runs the fast tests against the lowest versions setup.py allows
# (constraints-lowest.txt), in a virtualenv of its own: about 30 s of tests, plus a minute to
# build that virtualenv the first time, so it is not part of `make test`.
LOWEST_VENV = .venv-lowest

$(LOWEST_VENV)/.test-deps: setup.py constraints-lowest.txt
	$(MAKE) VENV=$(LOWEST_VENV) $(LOWEST_VENV)/bin/python
	$(LOWEST_VENV)/bin/pip install -q --disable-pip-version-check -c constraints-lowest.txt -e '.[test]' \
		--config-settings editable_mode=compat
	touch $@

test-lowest: $(LOWEST_VENV)/.test-deps
	$(LOWEST_VENV)/bin/pip list --disable-pip-version-check 2>/dev/null \
		| grep -iE '^(autobahn|twisted|python-dotenv|prometheus.client|rich) '
	$(LOWEST_VENV)/bin/python -m pytest tests/unit tests/memory -q

clean:
	rm -rf $(VENV) $(LOWEST_VENV) build dist *.egg-info twisted/plugins/dropin.cache

# `make bench` (python -m bench) measures the tunnel against nginx on loopback and prints
# one table (also written as JSON under bench/results/, git-ignored); it installs wrk,
# nginx-light, curl and redis-server with apt-get when missing. Quick run: make bench BENCH_DURATION=2 BENCH_REPEAT=1
# BENCH_REFERENCE=DIR adds the side-by-side with the reference Node.js pair (DIR/tpot-server and
# DIR/tpot-client, fetched at v0.2.0 and npm-installed by hand: README, Performance; needs node);
# BENCH_REFERENCE_ONLY=1 runs that part alone.
BENCH_DURATION ?= 10
BENCH_REPEAT ?= 3
BENCH_REFERENCE ?=
BENCH_REFERENCE_ONLY ?=

.PHONY: bench
bench: $(VENV)/.run-deps
	@command -v wrk >/dev/null && { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null && command -v curl >/dev/null \
		&& command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
		|| { apt-get update -q && apt-get install -y -q wrk nginx-light curl redis-server; }
	@test -z "$(BENCH_REFERENCE)" || command -v node >/dev/null \
		|| { echo "make: BENCH_REFERENCE needs Node.js (node) on PATH, to run the reference pair."; exit 1; }
	BENCH_DURATION=$(BENCH_DURATION) BENCH_REPEAT=$(BENCH_REPEAT) BENCH_REFERENCE=$(BENCH_REFERENCE) \
		BENCH_REFERENCE_ONLY=$(BENCH_REFERENCE_ONLY) $(VENV)/bin/python -m bench
