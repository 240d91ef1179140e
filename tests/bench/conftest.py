# The benchmark is run by `make bench` (tests/bench/run_bench.py), never by
# pytest: it needs root, nginx, wrk and minutes of wall time.
collect_ignore_glob = ["*"]
