"""What ships: the sdist holds every build input, the wheel built from it holds
every module, both C extensions and the nginx/ files, and the installed command
runs the C decoder.

``make test`` builds the sdist and the wheel (from the sdist) and names them in
UWSGIGW_TEST_SDIST / UWSGIGW_TEST_WHEEL; a dev run without them builds both into
a temporary directory here (``python -m build``, slow but never skipped).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import INSTALLED, REPO_DIR, uwsgigw_cmd

# Tracked files that are not needed to build or install uwsgigw; everything
# else that git tracks is a build input and must be in the sdist.
NOT_BUILD_INPUTS = ("tests/", ".ci/", ".gitignore", "Makefile")
EXTENSIONS = ("_cdecoder", "_fastpath")  # cffi decoder, setup.py's fast path
BUILD_SCRIPT = "uwsgigw.protocol._decoder_build"  # setup.py's cffi_modules


def tracked_files() -> list[str]:
    done = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_DIR, capture_output=True,
                          timeout=60)
    if done.returncode != 0:
        pytest.fail("git ls-files failed in %s (the packaging tests need a git checkout): %s"
                    % (REPO_DIR, done.stderr.decode(errors="replace")))
    return sorted(name for name in done.stdout.decode().split("\0") if name)


def build_inputs() -> list[str]:
    return [f for f in tracked_files()
            if not f.startswith(NOT_BUILD_INPUTS) and f not in NOT_BUILD_INPUTS]


def tracked_modules() -> list[str]:
    return [f for f in tracked_files() if f.startswith("uwsgigw/") and f.endswith(".py")]


def tracked_nginx_files() -> list[str]:
    return [f for f in tracked_files() if f.startswith("nginx/")]


@pytest.fixture(scope="session")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    """(sdist, wheel): make's, or built here like make builds them."""
    sdist, wheel = os.environ.get("UWSGIGW_TEST_SDIST"), os.environ.get("UWSGIGW_TEST_WHEEL")
    if sdist or wheel or INSTALLED:
        assert sdist and wheel, "set both UWSGIGW_TEST_SDIST and UWSGIGW_TEST_WHEEL"
        return Path(sdist), Path(wheel)
    out = tmp_path_factory.mktemp("dist")
    # No options: build's default is the sdist, then the wheel built from that sdist.
    done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO_DIR)],
                          cwd=str(out), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, "python -m build failed:\n%s%s" % (done.stdout[-5000:],
                                                                      done.stderr[-5000:])
    sdists, wheels = sorted(out.glob("uwsgigw-*.tar.gz")), sorted(out.glob("uwsgigw-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(out.iterdir())
    return sdists[0], wheels[0]


def sdist_names(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as tar:
        # uwsgigw-0.1.0/setup.py -> setup.py
        return {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name and m.isfile()}


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as whl:
        return set(whl.namelist())


def test_sdist_holds_every_build_input(dists):
    names = sdist_names(dists[0])
    inputs = build_inputs()
    for required in ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md"):
        assert required in inputs
    assert any(f.startswith("csrc/") for f in inputs) and tracked_nginx_files()
    missing = [f for f in inputs if f not in names]
    assert not missing, "the sdist %s lacks tracked build inputs: %s" % (dists[0].name, missing)


def test_wheel_holds_every_module_and_both_extensions(dists):
    names = wheel_names(dists[1])
    missing = [f for f in tracked_modules() if f not in names]
    assert not missing, "the wheel %s lacks modules: %s" % (dists[1].name, missing)
    for ext in EXTENSIONS:
        built = [n for n in names if n.startswith("uwsgigw/%s." % ext) and n.endswith(".so")]
        assert len(built) == 1, "the wheel has no compiled uwsgigw.%s: %s" % (ext, sorted(names))
    assert not [n for n in names if n.startswith(("tests/", "csrc/"))]


def test_wheel_ships_the_nginx_files_unchanged(dists):
    """devnginx (`make run`, the demo) reads them from the package when installed."""
    with zipfile.ZipFile(dists[1]) as whl:
        for name in tracked_nginx_files():
            shipped = "uwsgigw/" + name
            assert shipped in whl.namelist(), "the wheel lacks %s" % shipped
            assert whl.read(shipped) == (REPO_DIR / name).read_bytes(), shipped


def test_wheel_alone_imports_every_module_and_runs(dists, tmp_path):
    """The wheel, installed by itself, imports all of uwsgigw and starts."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", "--target", str(target), str(dists[1])],
                   check=True, timeout=300)
    modules = [f[:-3].replace("/", ".").removesuffix(".__init__") for f in tracked_modules()]
    modules.remove(BUILD_SCRIPT)  # shipped, but it reads csrc/ when imported: builds only
    code = ("import importlib\n"
            "for name in %r:\n"
            "    print(importlib.import_module(name).__file__)\n"
            "from uwsgigw.cli import version_line\n"
            "print(version_line('auto'))\n" % modules)
    env = dict(os.environ, PYTHONPATH=str(target))  # click and cffi: this venv's
    done = subprocess.run([sys.executable, "-P", "-c", code] if sys.version_info >= (3, 11)
                          else [sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr
    *where, version = done.stdout.splitlines()
    # An editable install of the checkout in this venv must not fill the gaps.
    outside = [w for w in where if not Path(w).resolve().is_relative_to(target.resolve())]
    assert len(where) == len(modules) and not outside, "not from the wheel: %s" % outside
    assert "(decoder: c," in version, version


def test_installed_command_reports_the_c_decoder():
    done = subprocess.run(uwsgigw_cmd("--version"), capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("UWSGIGW_")}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("uwsgigw ") and "(decoder: c," in done.stdout, done.stdout
