"""The benchmark (`make bench`); a package only so that pytest imports its
conftest.py as ``bench.conftest`` instead of shadowing ``tests/conftest.py``
(the tests do ``from conftest import ...``)."""
