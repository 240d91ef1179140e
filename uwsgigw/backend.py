"""Choose the backend: the C accelerators or the pure-Python twins.

Like python-zstandard's backend selection and gunicorn's ``http_parser``
setting: ``auto`` uses C when the extension imports and falls back quietly,
``c`` insists (and says how to get it), ``python`` forces the fallback. The
config layer maps ``--decoder`` / ``UWSGIGW_DECODER`` to ``select()``; the
chosen name is logged at start-up and shown by ``--version``.

Both backends have the same signature, ``decode(data, max_block) -> Packet |
None``, raise the same errors with the same messages, and run the same tests.
The "c" backend also brings the C request path (uwsgigw/wsgi/fastpath.py);
this module sits above the packages because it assembles from two of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .protocol import decoder_py
from .protocol.decoder_py import Packet

__all__ = ["Backend", "DecoderUnavailable", "CHOICES", "select", "Packet"]

CHOICES = ("auto", "c", "python")

_INSTALL_HINT = (
    "reinstall uwsgigw from source with a C compiler and cffi available, e.g. "
    "`apt-get install gcc python3-dev` (Debian/Ubuntu) or `dnf install gcc "
    "python3-devel` (Fedora/RHEL), then `pip install --force-reinstall "
    "--no-binary uwsgigw uwsgigw` (from a checkout: `pip install -e .`); or "
    "run with --decoder python"
)


class DecoderUnavailable(RuntimeError):
    """``--decoder c`` was asked for but the extension cannot be imported."""


@dataclass(frozen=True)
class Backend:
    name: str  # "c" or "python"
    decode: Callable[..., Packet | None]
    # uwsgigw.wsgi.fastpath (the C request path) for "c" when it is built, else
    # None: the handler then runs the Python request path around ``decode``.
    fastpath: object = None


def _import_c() -> Backend:
    try:
        from .protocol import decoder_c
    except ImportError as exc:
        raise DecoderUnavailable(
            "the C packet decoder (uwsgigw._cdecoder) is not available (%s); %s"
            % (exc, _INSTALL_HINT)
        ) from exc
    try:
        from .wsgi import fastpath
    except ImportError:
        fastpath = None  # an older build: the C decoder alone still helps
    return Backend("c", decoder_c.decode, fastpath)


def select(choice: str = "auto") -> Backend:
    """Return the backend for ``choice``: "auto", "c" or "python"."""
    if choice == "python":
        return Backend("python", decoder_py.decode)
    if choice == "c":
        return _import_c()
    if choice == "auto":
        try:
            return _import_c()
        except DecoderUnavailable:
            return Backend("python", decoder_py.decode)
    raise ValueError(
        "unknown decoder %r: expected one of %s" % (choice, ", ".join(CHOICES))
    )
