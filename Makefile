# uwsgigw: `make run` (demo behind nginx) and `make test` install what they need.
PYTHON    ?= python3
VENV      ?= .venv
PY         = $(VENV)/bin/python
PORT      ?= 8080
DIST      ?= dist
TEST_VENV ?= .venv-test

.PHONY: all install system-deps fuzz-deps dist run test clean docs

all: test

# nginx runs the integration tests and the demo (its stream module: the PROXY
# protocol test's TCP balancer); a C compiler, venv and Python's
# headers build and install uwsgigw with its C decoder; openssl makes the TLS
# test's certificate. apt-get only for what is missing.
system-deps:
	@missing=""; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || \
		{ PATH="$$PATH:/usr/sbin" nginx -V 2>&1 | tr ' ' '\n' | grep -qx -- --with-stream; } || \
		missing="$$missing libnginx-mod-stream"; \
	command -v cc >/dev/null 2>&1 || missing="$$missing gcc libc6-dev"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	$(PYTHON) -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
		|| missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# clang and the libFuzzer runtime of that clang's own major version, for the short
# fuzz pass of make test and for make fuzz: whatever clang this release ships, not
# a pinned one. The runtime is libclang-rt-V-dev (newer releases) or part of
# libclang-common-V-dev (older ones); a tiny -fsanitize=fuzzer program proves it.
fuzz-deps:
	@probe() { d=$$(mktemp -d) || return 1; \
		printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' > $$d/p.c; \
		clang -fsanitize=fuzzer,address,undefined $$d/p.c -o $$d/p >/dev/null 2>&1; s=$$?; rm -rf $$d; return $$s; }; \
	updated=""; \
	update() { [ -n "$$updated" ] || { apt-get update -qq && updated=1; }; }; \
	add() { update && echo "installing: $$*" && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$$@"; }; \
	command -v clang >/dev/null 2>&1 || add clang || exit 1; \
	probe && exit 0; \
	v=$$(clang --version | sed -n 's/.*clang version \([0-9][0-9]*\).*/\1/p' | head -n 1); \
	update; \
	for pkg in libclang-rt-$$v-dev libclang-common-$$v-dev; do \
		if apt-cache show $$pkg >/dev/null 2>&1; then add $$pkg && probe && exit 0; fi; \
	done; \
	echo "error: clang $$v cannot link -fsanitize=fuzzer: no libFuzzer runtime for it" \
		"(tried libclang-rt-$$v-dev and libclang-common-$$v-dev). Install the libFuzzer" \
		"runtime of your clang, or a clang that has one, and run make again." >&2; \
	exit 1

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Development: editable install into .venv (make run, make fuzz, make soak).
install: system-deps $(PY)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m uwsgigw --version

run: install
	$(PY) -m uwsgigw.devnginx --demo --port $(PORT)

# What users install: the sdist, then the wheel built from that sdist (the
# default of `python -m build`), in dist/.
dist: system-deps $(PY)
	$(PY) -m pip install -q build
	rm -rf $(DIST)
	$(PY) -m build --outdir $(DIST) .

# The suite runs against the wheel, installed (not editable) into a fresh
# virtualenv: its `uwsgigw` command, its package, never the checkout.
# UWSGIGW_TEST_REQUIRE_C: a C decoder that failed to build is an error here, not
# a silently skipped half of the suite. UWSGIGW_TEST_NO_SKIPS: any skipped test
# fails the run, except the long_running ones (make soak runs those).
test: system-deps fuzz-deps dist
	rm -rf $(TEST_VENV)
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/python -m pip install -q "$$(ls $(DIST)/uwsgigw-*.whl)[test]"
	$(TEST_VENV)/bin/uwsgigw --version
	UWSGIGW_TEST_INSTALLED=1 UWSGIGW_TEST_REQUIRE_C=1 UWSGIGW_TEST_NO_SKIPS=1 \
	UWSGIGW_TEST_SDIST="$$(ls $(abspath $(DIST))/uwsgigw-*.tar.gz)" \
	UWSGIGW_TEST_WHEEL="$$(ls $(abspath $(DIST))/uwsgigw-*.whl)" \
		$(TEST_VENV)/bin/pytest

# Regenerate the README settings block from the option table.
docs:
	$(PY) -m uwsgigw.config.options --write README.md

clean:
	rm -rf build $(DIST) $(TEST_VENV) *.egg-info uwsgigw/_cdecoder*.so uwsgigw/_cdecoder.c \
		uwsgigw/_fastpath*.so .pytest_cache .hypothesis

# --- `make bench` (tests/bench/README.md) ---------------------------------
BENCH_VENV ?= /tmp/uwsgigw-bench-venv
BENCH_PY    = $(BENCH_VENV)/bin/python
BENCH_ARGS ?=

# The peers of both benches: uWSGI, Gunicorn, Flask and the ASGI side (issue 8);
# Granian, httptools (Uvicorn's parser) and websockets (Uvicorn's WebSocket
# side) for the HTTP comparisons of issue 14.
BENCH_PKGS = uwsgi gunicorn flask uvicorn uvicorn-worker fastapi uvloop httptools \
	granian websockets

.PHONY: bench bench-http bench-static bench-ab bench-deps
bench-deps: system-deps
	@command -v wrk >/dev/null 2>&1 || { echo "installing: wrk"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	@[ -x $(BENCH_PY) ] || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q $(BENCH_PKGS)

# uwsgigw vs uWSGI vs Gunicorn behind one nginx under wrk, then the HTTP
# listener vs uWSGI, Granian, Gunicorn and Uvicorn (issue 14), static files
# vs nginx, uWSGI and Granian (issue 15), then the async bench; report on stdout and in /tmp/uwsgigw-bench/report.md.
# BENCH_ARGS="--quick" for a smoke run; "--only http" (or `make bench-http`),
# "--only static" (or `make bench-static`) or "--only uwsgi" for one part.
bench: bench-deps
	$(BENCH_PY) -m pip install -q -e .
	$(BENCH_PY) tests/bench/run_bench.py $(BENCH_ARGS)
	$(if $(or $(findstring --only http,$(BENCH_ARGS)),$(findstring --only static,$(BENCH_ARGS))),,$(BENCH_PY) tests/bench/bench_asgi.py \
		$(if $(findstring --quick,$(BENCH_ARGS)),--rounds 1 --seconds 2))

# Only the HTTP part (tests/bench/bench_http.py); BENCH_ARGS as for bench.
bench-http: bench-deps
	$(BENCH_PY) -m pip install -q -e .
	$(BENCH_PY) tests/bench/run_bench.py --only http $(BENCH_ARGS)

# Only the static-file part (tests/bench/bench_static.py, issue 15); BENCH_ARGS as for bench.
bench-static: bench-deps
	$(BENCH_PY) -m pip install -q -e .
	$(BENCH_PY) tests/bench/run_bench.py --only static $(BENCH_ARGS)

# A/B: the working tree vs the git revision BASE (default: the merge base with
# main, see tests/bench/README.md), each built as a wheel into its own venv in
# /tmp/uwsgigw-bench-ab; hello and flask, 6 rounds, order alternating; report
# on stdout and in /tmp/uwsgigw-bench/ab.md. AB_ARGS: more options of bench_ab.py.
BASE    ?=
AB_ARGS ?=
bench-ab: bench-deps
	$(BENCH_PY) tests/bench/bench_ab.py --python $(PYTHON) $(if $(BASE),--base '$(BASE)') $(AB_ARGS)

# --- `make fuzz` / `make soak` (tests/fuzz/build.py, tests/soak/run_soak.py) ---
FUZZ_SECONDS ?= 300
SOAK_SECONDS ?= 600
.PHONY: fuzz soak
# Coverage-guided fuzzing of the C decoder, FUZZ_SECONDS each: libFuzzer with
# ASan/UBSan (clang), then atheris (C vs Python differential, C coverage via an
# instrumented build). New inputs and crashes go to /tmp/uwsgigw-fuzz.
fuzz: fuzz-deps install
	@$(PY) -c "import atheris" 2>/dev/null || $(PY) -m pip install -q atheris
	$(PY) tests/fuzz/build.py run $(FUZZ_SECONDS)

# 1000 connections through nginx for 30 s, 100,000 hostile packets, the 1 GiB
# RSS checks, a cron job at a real minute boundary, then SOAK_SECONDS of mixed
# load with reloads, SIGKILLs, harakiri.
soak: install
	@command -v wrk >/dev/null 2>&1 || { echo "installing: wrk"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	UWSGIGW_LOAD_SECONDS=30 UWSGIGW_HOSTILE_PACKETS=100000 $(PY) -m pytest -s -p no:cacheprovider \
		tests/test_resources.py tests/test_hostile_packets.py \
		tests/test_cron.py::test_a_job_fires_at_a_real_minute_boundary
	$(PY) tests/soak/run_soak.py --seconds $(SOAK_SECONDS)
