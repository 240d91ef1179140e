"""Build hook for the optional C packet decoder; metadata is in pyproject.toml.

The only additions over pyproject.toml: ``cffi_modules`` (the cffi build
script in uwsgigw/protocol/_decoder_build.py), a build_ext that never fails the
install, and a build_py that ships nginx/ inside the package. Without cffi or a working C compiler uwsgigw installs anyway, warns
on stderr, and runs the pure-Python decoder (``--decoder auto``). pip shows
a successful build's output only with ``pip install -v``; at run time
``uwsgigw --version`` names the decoder in use.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
C_SOURCES = ("csrc/uwsgi_decoder.h", "csrc/uwsgi_decoder.c")
WARNING = "uwsgigw: C decoder not built ({}); using the pure-Python decoder"


def warn(why: str) -> None:
    print("\n" + "*" * 72, file=sys.stderr)
    print(WARNING.format(why), file=sys.stderr)
    print("  To build it: install a C compiler and the Python headers (Debian/Ubuntu:\n"
          "  apt-get install gcc python3-dev), and cffi, then reinstall.", file=sys.stderr)
    print("*" * 72 + "\n", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext whose failures are warnings: the extension is an accelerator."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # compiler missing, cffi codegen failure, ...
            warn("%s: %s" % (type(exc).__name__, exc))

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError / LinkError / CCompilerError
            warn("%s: %s" % (type(exc).__name__, exc))


class BuildPyWithNginx(build_py):
    """Copy nginx/ (site.conf, uwsgi_params, systemd units) into the built package
    as uwsgigw/nginx/: where ``python -m uwsgigw.devnginx`` finds it once installed
    from a wheel. An editable install reads the checkout's nginx/ instead."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib, "uwsgigw", "nginx")
        self.mkpath(str(dest))
        for path in sorted((ROOT / "nginx").glob("*")):
            if path.is_file():
                self.copy_file(str(path), str(dest / path.name))


def cffi_options() -> dict:
    # cffi runs the build script inside setup(), where an exception would fail
    # the install: check its inputs first (an sdist made without them).
    missing = [p for p in C_SOURCES if not (ROOT / p).is_file()]
    if missing:
        warn("missing %s" % ", ".join(missing))
        return {}
    try:
        import cffi  # noqa: F401  (needed by cffi_modules below)
    except ImportError:
        # Without cffi, setuptools would only say "Unknown distribution
        # option: 'cffi_modules'" and silently skip the extension.
        warn("cffi is not installed in the build environment")
        return {}
    return {"cffi_modules": ["uwsgigw/protocol/_decoder_build.py:ffibuilder"]}


def fastpath_extension() -> list:
    """The hot path in C (csrc/fastpath*.c, CPython C API): it builds Python
    objects, which cffi cannot. Each file is its own unit (csrc/fastpath.h
    declares what they share); the decoder source is compiled in too, so
    both C paths validate packets with the same code."""
    if not (ROOT / "csrc" / "fastpath.c").is_file():
        return []
    parts = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "csrc").glob("fastpath_*.c"))]
    return [Extension("uwsgigw._fastpath",
                      sources=["csrc/fastpath.c", *parts, "csrc/uwsgi_decoder.c"],
                      include_dirs=["csrc"],
                      depends=list(C_SOURCES) + ["csrc/fastpath.h"])]


setup(cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithNginx},
      ext_modules=fastpath_extension(),
      **cffi_options())
