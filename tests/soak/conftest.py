# The soak is run by `make soak` (tests/soak/run_soak.py), never by pytest:
# it takes 10 minutes. The tests import the helpers here as ``soak.procinfo``
# and ``soak.apps``.
collect_ignore_glob = ["*"]
