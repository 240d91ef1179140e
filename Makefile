# uwsgigw: `make run` (demo behind nginx) and `make test` install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PORT   ?= 8080

.PHONY: all install system-deps run test clean docs

all: test

# nginx runs the integration tests and the demo; gcc + headers build the C decoder;
# clang (libFuzzer) runs the short fuzz pass in make test and make fuzz.
system-deps:
	@missing=""; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	command -v cc >/dev/null 2>&1 || missing="$$missing gcc libc6-dev"; \
	command -v clang >/dev/null 2>&1 || missing="$$missing clang libclang-rt-14-dev"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: system-deps $(PY)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m uwsgigw --version

run: install
	$(PY) -m uwsgigw.devnginx --demo --port $(PORT)

# UWSGIGW_TEST_REQUIRE_C: a C decoder that failed to build is an error here,
# not a silently skipped half of the suite.
test: install
	UWSGIGW_TEST_REQUIRE_C=1 $(PY) -m pytest

# Regenerate the README settings block from the option table.
docs:
	$(PY) -m uwsgigw.options --write README.md

clean:
	rm -rf build dist *.egg-info uwsgigw/_cdecoder*.so uwsgigw/_cdecoder.c .pytest_cache .hypothesis

# --- `make bench` (tests/bench/README.md) ---------------------------------
BENCH_VENV ?= /tmp/uwsgigw-bench-venv
BENCH_PY    = $(BENCH_VENV)/bin/python
BENCH_ARGS ?=

.PHONY: bench
# uwsgigw vs uWSGI vs Gunicorn behind one nginx under wrk; report on stdout
# and in /tmp/uwsgigw-bench/report.md. BENCH_ARGS="--quick" for a smoke run.
bench: system-deps
	@command -v wrk >/dev/null 2>&1 || { echo "installing: wrk"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	@[ -x $(BENCH_PY) ] || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q uwsgi gunicorn flask uvicorn uvicorn-worker fastapi uvloop
	$(BENCH_PY) -m pip install -q -e .
	$(BENCH_PY) tests/bench/run_bench.py $(BENCH_ARGS)
	$(BENCH_PY) tests/bench/bench_asgi.py

# --- `make fuzz` / `make soak` (tests/fuzz/build.py, tests/soak/run_soak.py) ---
FUZZ_SECONDS ?= 300
SOAK_SECONDS ?= 600
.PHONY: fuzz soak
# Coverage-guided fuzzing of the C decoder, FUZZ_SECONDS each: libFuzzer with
# ASan/UBSan (clang), then atheris (C vs Python differential, C coverage via an
# instrumented build). New inputs and crashes go to /tmp/uwsgigw-fuzz.
fuzz: install
	@$(PY) -c "import atheris" 2>/dev/null || $(PY) -m pip install -q atheris
	$(PY) tests/fuzz/build.py run $(FUZZ_SECONDS)

# 1000 connections through nginx for 30 s, 100,000 hostile packets, the 1 GiB
# RSS checks, then SOAK_SECONDS of mixed load with reloads, SIGKILLs, harakiri.
soak: install
	@command -v wrk >/dev/null 2>&1 || { echo "installing: wrk"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	UWSGIGW_LOAD_SECONDS=30 UWSGIGW_HOSTILE_PACKETS=100000 $(PY) -m pytest -s -p no:cacheprovider \
		tests/test_resources.py tests/test_hostile_packets.py
	$(PY) tests/soak/run_soak.py --seconds $(SOAK_SECONDS)
