"""Every real-world uwsgi.ini in ../shared/ini-corpus passes ``uwsgigw --ini FILE --check``.

Each file must exit 0, with one clear warning line for every uWSGI option
uwsgigw does not support. The files' own paths, users and environment
variables do not exist here; those are warnings, never errors.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import uwsgigw_cmd

from uwsgigw.cli import main
from uwsgigw.uwsgi_compat import UNSUPPORTED

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "ini-corpus"
FILES = sorted(CORPUS.glob("*.ini")) if CORPUS.is_dir() else []
# Variables the corpus tests with if-env/$(...): unset, so runs are repeatable.
CORPUS_VARIABLES = re.compile(r"^(UWSGI|UWSGIGW_|LISTEN_)|^(CIRCLECI|SMTPD_PORT|BIND_ADDRESS|"
                              r"MOUNT_PATH|DJANGO_DIR|TERM|REDIS_.*|CELERY_.*)$")

pytestmark = pytest.mark.skipif(not FILES, reason="../shared/ini-corpus is not here")


@pytest.fixture(autouse=True)
def corpus_environment(monkeypatch):
    for name in list(os.environ):
        if CORPUS_VARIABLES.search(name):
            monkeypatch.delenv(name)


def keys_in(path: Path) -> set[str]:
    """Option keys of a file, read independently of uwsgigw's reader."""
    keys = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and line[0] not in "#;[" and "=" in line:
            keys.add(line.split("=", 1)[0].strip())
    return keys


@pytest.mark.parametrize("path", FILES, ids=[p.name[:3] for p in FILES])
def test_corpus_file_passes_check(path):
    result = CliRunner().invoke(main, ["--ini", str(path), "--check"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("%s: OK for uwsgigw" % path)
    for key in sorted(keys_in(path) & set(UNSUPPORTED)):
        expected = "'%s' is a uWSGI option uwsgigw does not support: %s" % (
            key, UNSUPPORTED[key].advice)
        assert any(expected in line for line in lines), key
    assert all(line.startswith(("warning: ", "note: ")) for line in lines[:-1])


def test_corpus_strict_files_still_pass():
    strict = [p for p in FILES if re.search(r"^strict\s*=\s*true", p.read_text(), re.M)]
    assert len(strict) == 3
    for path in strict:
        result = CliRunner().invoke(main, ["--ini", str(path), "--check"])
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", ["001", "017", "040"])
def test_corpus_with_the_real_command(name):
    path = next(p for p in FILES if p.name.startswith(name))
    env = {k: v for k, v in os.environ.items() if not CORPUS_VARIABLES.search(k)}
    result = subprocess.run(uwsgigw_cmd("--ini", str(path), "--check"),
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("%s: OK for uwsgigw" % path)


def test_corpus_values_that_need_uwsgi_rules(tmp_path):
    from uwsgigw.config import load

    def cfg(prefix: str):
        path = next(p for p in FILES if p.name.startswith(prefix))
        return load(["--ini", str(path), "--check"], {})

    assert cfg("012").processes == 2 * (os.cpu_count() or 1)  # %(%k * 2)
    assert cfg("012").buffer_size == 65535 and cfg("012").reload_on_rss == 2048
    assert cfg("017").max_requests == 1000  # "1000    ; Restart workers ..."
    assert cfg("017").log_format.startswith('"address":"%(addr)"')
    assert cfg("017").socket == [":8001"]  # uwsgi-socket; http-socket is not ours
    assert cfg("019").chdir == "/seed" and cfg("019").chmod_socket == "666"  # ini = :base
    assert cfg("020").buffer_size == 65535  # "65536  # Increase buffer ..."
    assert cfg("020").log_format.startswith("%(ftime) INFO")
    assert cfg("021").post_buffering == 0  # "true", as uWSGI reads it
    assert cfg("038").processes == 2 and cfg("038").threads == 2
    assert cfg("039").wsgi_file == "/opt/kispower/project/run.py"  # %(pythonpath)
    assert cfg("040").threads == 200 and cfg("040").chdir == "/usr/local/flowmeter"
    assert cfg("014").chdir == str(CORPUS.resolve()) + "/../"  # %d../ (%d is the real path)
    assert cfg("007").mount == ["/api=wsgi:app"] and cfg("007").manage_script_name is True
