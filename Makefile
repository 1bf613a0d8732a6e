# `make test` sets up everything it needs (a virtual environment in .venv, Debian's
# Chromium for the browser tests) and runs the linters, the type checker and the whole
# test suite. `make demo` sets up and serves the demo application (`errands demo`) in a
# virtual environment of its own, .venv-demo, with only what the demo needs;
# `make cli-demo` runs the command-line example (in .venv-demo too, on its own
# database); `make chaos` kills workers while they work and checks every record
# (bench/README.md, "Chaos").
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test lint typecheck pytest django6 demo cli-demo bench chaos clean chromium postgres brokers screenshots
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PORT ?= 8000

test: lint typecheck pytest django6

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/lint-imports --no-cache

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# Three pytest processes, each taking whole modules (module-scoped fixtures such as the
# browser's stay in one process). Many tests wait on worker processes, servers and
# browsers rather than compute, so three keep 2 cores busier than two: 9.4 minutes here
# against 12.4 (2026-12-06). The slowest tests are listed at the end.
TEST_WORKERS ?= 3
pytest: $(BIN)/.installed chromium postgres brokers
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

# errands.django on Django 6 (its own django.tasks), which needs Python 3.12 or newer:
# the Django tests again in a second virtual environment (.venv-django6). The main one
# has Django 5.2 with the django-tasks backport.
PYTHON312 ?= $(shell for p in /root/.pyenv/versions/3.1[2-9]*/bin/python python3.13 python3.12; do \
	$$p -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && echo $$p && break; done)
DJANGO6 := .venv-django6
DJANGO_TESTS := tests/test_django_backend.py tests/test_django_api.py tests/test_django_site.py \
	tests/test_django_admin.py tests/test_django_commands.py
$(DJANGO6)/.installed: pyproject.toml
	$(PYTHON312) -m venv $(DJANGO6)
	$(DJANGO6)/bin/pip install --quiet -e '.[postgresql,web]' 'django>=6,<7' pytest pytest-asyncio \
		pytest-timeout pytest-xdist httpx
	touch $@

django6: postgres
	@if [ -z "$(PYTHON312)" ]; then echo "django6: SKIPPED, no Python 3.12 or newer here"; \
	else $(MAKE) --no-print-directory $(DJANGO6)/.installed && \
		$(DJANGO6)/bin/pytest -p no:cacheprovider -n 2 --dist loadfile $(DJANGO_TESTS); fi

# The browser tests drive Debian's Chromium (Playwright's own browser downloads are not used).
chromium:
	@test -x /usr/bin/chromium || ( $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium )

# The conformance tests also run on PostgreSQL (127.0.0.1:5432, trust auth); start the
# local server if it is down. Point ERRANDS_TEST_PG at another server to use that one.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || ( $(SUDO) pg_ctlcluster --skip-systemctl-redirect \
		$$(ls /etc/postgresql) main start && sleep 2 && pg_isready -h 127.0.0.1 -p 5432 )

# The Celery engine's tests use Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672,
# guest/guest); start the local servers if they are down.
brokers:
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || ( $(SUDO) redis-server --daemonize yes \
		--bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis \
		--logfile /var/log/redis/ci.log && sleep 1 )
	@$(PYTHON) -c "import socket; socket.create_connection(('127.0.0.1', 5672), 2)" 2>/dev/null \
		|| ( $(SUDO) rabbitmq-server -detached; for i in $$(seq 60); do $(PYTHON) -c \
		"import socket; socket.create_connection(('127.0.0.1', 5672), 2)" 2>/dev/null && break; \
		sleep 1; done )

# The demo's own environment: errands with its `demo` extra (the web application, the
# metrics, password hashing), and the PostgreSQL driver only when ERRANDS_DATABASE_URL
# names a PostgreSQL database; none of the development tool chain. One stamp per set of
# extras: a later `make demo` on PostgreSQL adds the driver.
comma := ,
DEMO_VENV ?= .venv-demo
DEMO_EXTRAS := demo$(if $(filter postgresql%,$(ERRANDS_DATABASE_URL)),$(comma)postgresql)
DEMO_STAMP := $(DEMO_VENV)/.installed-$(subst $(comma),+,$(DEMO_EXTRAS))

$(DEMO_STAMP): pyproject.toml
	test -x $(DEMO_VENV)/bin/python || $(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install --quiet -e '.[$(DEMO_EXTRAS)]'
	touch $@

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/errands demo --port $(PORT)

# The README's pictures of the demo, taken by its browser test.
screenshots: $(BIN)/.installed chromium
	ERRANDS_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/test_demo_browser.py -k screenshots

cli-demo: $(DEMO_STAMP)
	BIN=$(DEMO_VENV)/bin bash examples/demo.sh

bench: $(BIN)/.installed postgres
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/run.py

# The chaos run (bench/chaos.py, see bench/README.md): 3,000 tasks while workers are
# SIGKILLed every second, restarted by SIGTERM and one paused past its lease (on
# PostgreSQL a private server, restarted half-way), then every record checked; on both
# databases (both run; the target fails if either found a violation).
CHAOS_ARGS ?= --tasks 3000 --chaos-seconds 60 --workers 4 --concurrency 10 --pause
chaos: $(BIN)/.installed
	@rc=0; \
	$(BIN)/python bench/chaos.py --database sqlite $(CHAOS_ARGS) || rc=1; \
	$(BIN)/python bench/chaos.py --database postgresql --pg-restart $(CHAOS_ARGS) || rc=1; \
	exit $$rc

clean:
	rm -rf $(VENV) $(DEMO_VENV) .pytest_cache .mypy_cache .ruff_cache
