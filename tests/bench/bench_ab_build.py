"""The two builds of `make bench-ab`: the working tree and a base revision.

Each is built the same way, outside the repo, into a directory of its own
(``--build-dir``, default /tmp/uwsgigw-bench-ab/{current,base}):

    src/     the sources: ``git archive REV`` for the base; for the working
             tree, every file git tracks or would track (``git ls-files -co
             --exclude-standard``: uncommitted edits included, build
             artefacts such as *.so left out)
    wheel/   ``pip wheel --no-deps src`` (build isolation, so each build gets
             the build requirements its own pyproject.toml names)
    venv/    a fresh venv with that wheel (not editable) and Flask
    build.log

Both venvs are made by the same interpreter (``--python``). The base venv is
kept while its revision and interpreter stay the same (``stamp``); the
working tree is rebuilt on every run. The current venv gets the same versions
of the packages the base venv has (``pip freeze`` of the base as a pip
constraints file), so Flask and its dependencies cannot differ between the
two; the report lists any that do anyway.

Nothing here imports uwsgigw: the builds are only ever run from their venvs.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
BENCH_DIR = REPO / "tests" / "bench"
BUILD_DIR = "/tmp/uwsgigw-bench-ab"
# What goes into the wheel: an uncommitted change elsewhere does not make the
# build differ from HEAD.
PACKAGE_PATHS = ("uwsgigw", "csrc", "nginx", "setup.py", "pyproject.toml", "MANIFEST.in")
APP_DEPS = ("flask",)


class BuildError(RuntimeError):
    pass


@dataclass
class Revision:
    sha: str | None     # None: the working tree
    label: str          # "7488330+dirty", "b6ad724": the report's title
    detail: str = ""    # what the label stands for, how a default base was chosen


@dataclass
class Build:
    name: str           # server name in the bench: "uwsgigw" or "uwsgigw-base"
    rev: Revision
    root: Path
    version: str = ""   # `uwsgigw --version`
    extensions: list[str] = field(default_factory=list)
    packages: dict[str, str] = field(default_factory=dict)  # pip freeze, uwsgigw left out
    completed: list[str] = field(default_factory=list)  # see complete_package

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def script(self) -> str:
        return str(self.venv / "bin" / "uwsgigw")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


# --- git ---------------------------------------------------------------------

def git(*args: str) -> str:
    res = subprocess.run(["git", "-C", str(REPO)] + list(args),
                         capture_output=True, text=True)
    if res.returncode:
        raise BuildError("git %s: %s" % (" ".join(args), res.stderr.strip()))
    return res.stdout.strip()


def resolve(rev: str) -> str | None:
    try:
        return git("rev-parse", "--verify", "--quiet", rev + "^{commit}")
    except BuildError:
        return None


def package_changes() -> list[str]:
    """Paths under PACKAGE_PATHS that differ from HEAD (untracked ones too)."""
    out = git("status", "--porcelain", "--untracked-files=all", "--", *PACKAGE_PATHS)
    return [line[3:] for line in out.splitlines() if line.strip()]


def current_revision() -> Revision:
    head = git("rev-parse", "--short", "HEAD")
    changed = package_changes()
    if changed:
        shown = ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
        return Revision(None, head + "+dirty", "working tree; uncommitted: " + shown)
    dirty = bool(git("status", "--porcelain"))
    return Revision(None, head, "working tree%s" % (
        ", uncommitted changes outside the package only" if dirty else ""))


def base_revision(rev: str | None) -> Revision:
    """The named revision, or the default (tests/bench/README.md):

    1. the merge base of HEAD and origin/main (else main): what this branch
       started from, so the comparison is this branch's change alone;
    2. if that is HEAD itself (on main, or a branch with no commit of its own):
       HEAD when the package has uncommitted changes (they are the change),
       else HEAD~1 (the first parent: main before its last commit or merge).
    """
    if rev:
        sha = resolve(rev)
        if sha is None:
            raise BuildError("BASE=%s is not a commit of this repository" % rev)
        return Revision(sha, git("rev-parse", "--short", sha), "BASE=%s" % rev)
    head = git("rev-parse", "HEAD")
    why = "no main branch"
    for ref in ("origin/main", "main"):
        if resolve(ref):
            sha = git("merge-base", "HEAD", ref)
            if sha != head:
                return Revision(sha, git("rev-parse", "--short", sha),
                                "default: merge base of HEAD and %s" % ref)
            why = "the merge base with %s is HEAD" % ref
            break
    if package_changes():
        return Revision(head, git("rev-parse", "--short", head),
                        "default: HEAD (%s; the package has uncommitted changes)" % why)
    sha = resolve("HEAD~1")
    if sha is None:
        raise BuildError("no default base: HEAD has no parent; name one with BASE=<rev>")
    return Revision(sha, git("rev-parse", "--short", sha),
                    "default: HEAD~1 (%s, no uncommitted package change)" % why)


def export(rev: Revision, dest: Path) -> None:
    """The sources of ``rev`` into ``dest`` (emptied first)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if rev.sha is not None:
        archive = subprocess.Popen(["git", "-C", str(REPO), "archive", rev.sha],
                                   stdout=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout)
        archive.stdout.close()
        if archive.wait() or untar.returncode:
            raise BuildError("git archive %s | tar -x failed" % rev.sha)
        return
    names = git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, names.split("\0")):
        src = REPO / name
        if not os.path.lexists(src):
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), target)
        elif src.is_file():
            shutil.copy2(src, target)


# --- building ------------------------------------------------------------------

def _run(argv: list[str], log: Path, what: str) -> str:
    with open(log, "a") as f:
        f.write("\n$ %s\n" % " ".join(argv))
        f.flush()
        res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, cwd=str(log.parent))
        f.write(res.stdout)
    if res.returncode:
        tail = "\n".join(res.stdout.splitlines()[-25:])
        raise BuildError("%s failed (exit %d; log %s):\n%s" % (what, res.returncode, log, tail))
    return res.stdout


def freeze(python: str, log: Path) -> dict[str, str]:
    out = _run([python, "-m", "pip", "freeze"], log, "pip freeze")  # without pip, setuptools
    pkgs = {}
    for line in out.splitlines():
        name, sep, version = line.partition("==")
        if sep and name.lower() != "uwsgigw":
            pkgs[name.lower()] = version
    return pkgs


def stamp_of(rev: Revision, python: str) -> str:
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True).stdout.strip()
    return "%s\n%s\n%s\n" % (rev.sha, python, version)


def build(name: str, rev: Revision, root: Path, python: str,
          constraints: dict[str, str] | None = None, rebuild: bool = False) -> Build:
    """Build ``rev`` into ``root``; reuse a base build of the same revision."""
    b = Build(name, rev, root)
    stamp = root / "stamp"
    key = stamp_of(rev, python) if rev.sha else None
    fresh = (not rebuild and key is not None and os.access(b.script, os.X_OK)
             and stamp.exists() and stamp.read_text() == key)
    if not fresh:
        print("building %s (%s) in %s ..." % (name, rev.label, root), file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        log = root / "build.log"
        export(rev, root / "src")
        _run([python, "-m", "venv", str(b.venv)], log, "python -m venv")
        _run([b.python, "-m", "pip", "install", "-q", "--upgrade", "pip"], log, "pip upgrade")
        _run([b.python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "wheel"),
              str(root / "src")], log, "pip wheel (%s)" % name)
        wheels = glob.glob(str(root / "wheel" / "uwsgigw-*.whl"))
        if len(wheels) != 1:
            raise BuildError("expected one uwsgigw wheel in %s, found %s" % (
                root / "wheel", wheels))
        install = [b.python, "-m", "pip", "install", "-q", wheels[0]] + list(APP_DEPS)
        if constraints:
            cfile = root / "constraints.txt"
            cfile.write_text("".join("%s==%s\n" % kv for kv in sorted(constraints.items())
                                     if kv[0] not in ("pip", "setuptools", "wheel")))
            try:
                _run(install + ["-c", str(cfile)], log, "pip install (constrained)")
            except BuildError as exc:
                print("warning: %s\n  installing without the base's versions" % exc,
                      file=sys.stderr)
                _run(install, log, "pip install")
        else:
            _run(install, log, "pip install")
        (root / "completed.txt").write_text("".join(
            p + "\n" for p in complete_package(b, root / "src" / "uwsgigw")))
        if key:
            stamp.write_text(key)
    check(b)
    return b


def package_dir(b: Build) -> Path:
    return Path(_run([b.python, "-c", "import uwsgigw; print(uwsgigw.__file__)"],
                     b.root / "build.log", "import uwsgigw").strip()).parent


def complete_package(b: Build, src_pkg: Path) -> list[str]:
    """Copy the .py files of ``src_pkg`` that the wheel left out into the installed
    package; returns them. Revisions before 96d0f33 listed ``packages =
    ["uwsgigw"]`` in pyproject.toml, so their wheel lacks the subpackages
    (uwsgigw.asgi) and cannot start. Only pure Python is copied: the C
    extensions are built by the wheel, the same way for both builds."""
    dest = package_dir(b)
    copied = []
    for path in sorted(src_pkg.rglob("*.py")):
        rel = path.relative_to(src_pkg)
        if not (dest / rel).exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)
            copied.append("uwsgigw/%s" % rel)
    return copied


def check(b: Build) -> None:
    """The build is complete and imports only from its own venv."""
    log = b.root / "build.log"
    b.version = _run([b.script, "--version"], log, "uwsgigw --version").strip()
    pkg = package_dir(b)
    done = b.root / "completed.txt"
    b.completed = done.read_text().split() if done.exists() else []
    if not pkg.resolve().is_relative_to(b.venv.resolve()):
        raise BuildError("%s imports uwsgigw from %s, not from %s" % (b.name, pkg, b.venv))
    b.extensions = sorted(Path(p).name.split(".")[0] for p in glob.glob(str(pkg / "*.so")))
    src = b.root / "src"
    has_c = (src / "csrc").is_dir() or not src.exists()
    if has_c and not b.extensions:
        raise BuildError("%s has C sources but no C extension was built (no compiler or "
                         "Python headers? see %s)" % (b.name, log))
    b.packages = freeze(b.python, log)


def build_both(base_rev: str | None, build_dir: str, python: str,
               rebuild_base: bool = False) -> tuple[Build, Build]:
    """(current, base), the base first: its versions constrain the current one."""
    root = Path(build_dir)
    base = build("uwsgigw-base", base_revision(base_rev), root / "base", python,
                 rebuild=rebuild_base)
    current = build("uwsgigw", current_revision(), root / "current", python,
                    constraints=base.packages)
    return current, base


def package_differences(a: Build, b: Build) -> list[str]:
    """'name a-version vs b-version' for every installed package that differs."""
    names = sorted(set(a.packages) | set(b.packages))
    return ["%s %s vs %s" % (n, a.packages.get(n, "-"), b.packages.get(n, "-"))
            for n in names if a.packages.get(n) != b.packages.get(n)]


def mapped_packages(pid_tree: list[int]) -> set[str]:
    """The uwsgigw C extensions the server's processes have mapped, by path (a
    .py module is not mapped, a C extension is: where it comes from tells
    which build the server really runs)."""
    found = set()
    for pid in pid_tree:
        try:
            with open("/proc/%d/maps" % pid) as f:
                for line in f:
                    path = line.split(None, 5)[-1].strip()
                    if "/uwsgigw/" in path and ".so" in path:
                        found.add(path)
        except OSError:
            continue
    return found


def check_running(pid_tree: list[int], b: Build) -> str | None:
    """None if the server runs ``b``'s own C extensions and nothing else of uwsgigw."""
    mapped = mapped_packages(pid_tree)
    venv = str(b.venv.resolve()) + "/"
    foreign = sorted(p for p in mapped if not p.startswith(venv))
    if foreign:
        return "%s maps uwsgigw files from outside %s: %s" % (b.name, venv, ", ".join(foreign))
    if b.extensions and not mapped:
        return "%s has C extensions (%s) but its processes map none of them" % (
            b.name, ", ".join(b.extensions))
    return None
