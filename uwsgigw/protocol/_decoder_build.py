"""cffi builder for ``uwsgigw._cdecoder`` (API mode, out-of-line).

The C lives in real files under ``csrc/``; this script only reads them. The
cdef is the part of ``uwsgi_decoder.h`` between the ``cffi-cdef-begin`` and
``cffi-cdef-end`` markers, so the declarations exist once.

Used by setup.py (``cffi_modules=["uwsgigw/protocol/_decoder_build.py:ffibuilder"]``).
To build by hand into the source tree: ``python uwsgigw/protocol/_decoder_build.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from cffi import FFI

_ROOT = Path(__file__).resolve().parents[2]  # uwsgigw/protocol/ -> the checkout
_CSRC = _ROOT / "csrc"
_HEADER = _CSRC / "uwsgi_decoder.h"
_SOURCE = _CSRC / "uwsgi_decoder.c"


def _cdef_from_header(text: str) -> str:
    match = re.search(r"/\* cffi-cdef-begin \*/(.*?)/\* cffi-cdef-end \*/", text, re.S)
    if match is None:
        raise RuntimeError("%s: cffi-cdef markers not found" % _HEADER)
    return match.group(1)


def _rel(path: Path) -> str:
    """Path relative to the cwd, which is setup.py's directory in a build."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def _builder(absolute: bool) -> FFI:
    # cffi chdirs into its tmpdir when run by hand, so it needs absolute
    # paths; setuptools wants them relative to setup.py.
    path = str if absolute else _rel
    ffi = FFI()
    ffi.cdef(_cdef_from_header(_HEADER.read_text(encoding="ascii")))
    ffi.set_source(
        "uwsgigw._cdecoder",
        '#include "uwsgi_decoder.h"\n',
        sources=[path(_SOURCE)],
        include_dirs=[path(_CSRC)],
        depends=[path(_HEADER)],
    )
    return ffi


ffibuilder = _builder(absolute=__name__ == "__main__")

if __name__ == "__main__":
    # Build in a scratch dir (objects land under it by absolute path) and
    # copy only the extension into the source tree, where tests import it.
    with tempfile.TemporaryDirectory() as tmp:
        built = ffibuilder.compile(tmpdir=tmp, verbose=True)
        print("copied", shutil.copy(built, _ROOT / "uwsgigw"))
