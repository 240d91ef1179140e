"""The soak run (`make soak`, tests/soak/run_soak.py) and helpers the hostile-input
tests share with it; a package so that pytest imports its conftest.py as
``soak.conftest`` instead of shadowing ``tests/conftest.py``."""
