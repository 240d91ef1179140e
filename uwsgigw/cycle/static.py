"""What a static request gets: uWSGI's ``static-map`` family, driver-independent.

``StaticFiles.from_config(cfg)`` is built once per worker; ``lookup(environ)``
decides, with a few syscalls and no body I/O, whether a request is a static
hit and returns a ``StaticAnswer`` (status, headers, an open descriptor and the
byte range to send) that the driver sends (sendfile) and closes; None sends
the request on to the app.

Order and matching (uWSGI's ``core/protocol.c``): ``static-skip-ext`` on
PATH_INFO, then every ``check-static`` DIR (DIR + PATH_INFO), every
``static-map`` (DIR + the part after the prefix), every ``static-map2`` (DIR +
the whole PATH_INFO); the first one whose file exists answers, a missing file
falls through to the next and finally to the app. Only GET and HEAD. Unlike
uWSGI a prefix matches whole path segments: ``/static`` matches ``/static`` and
``/static/...`` but not ``/staticfoo`` (``/static/`` or ``/`` match everything
under them); a map to a single file answers exactly its prefix.

Safety: PATH_INFO is taken as bytes (PEP 3333's latin-1 str, so a raw uwsgi
packet's undecodable bytes stay bytes); NUL or a character above U+00FF is
never a file (None). The file is opened once, beneath the map's directory
descriptor (``static_open.open_beneath``: openat2 RESOLVE_BENEATH, or an
O_NOFOLLOW walk), so ``..``, a sibling directory sharing the prefix and a symlink
that leads out are refused by the kernel, not by comparing strings. Such a
path gets 403 and a log line, unless its real path lies under a ``static-safe``
DIR (or back under the map's own directory, as an absolute symlink may), where
it is opened again beneath that directory. A directory serves ``static-index``
or falls through; only regular files are served (opened O_NONBLOCK|O_NOCTTY,
checked with fstat, so a FIFO or device never blocks a worker); a file the
worker may not read gets 403 and a log line.

Headers: Content-Type (``static_rules.MimeTable``), Content-Length,
Last-Modified, an nginx-style ETag, Accept-Ranges, Expires and Cache-Control
max-age from the static-expires family, Content-Encoding and Vary for the
pre-compressed variants (``FILE.br``/``FILE.gz`` beside the file as requested).
Conditional requests and ranges follow RFC 9110 (``static_rules``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .. import log
from ..config.settings import ConfigError
from . import static_rules as rules
from .static_open import OPENAT2, open_beneath, try_beneath

_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
_VARIANTS = (("br", b".br"), ("gzip", b".gz"))
_OPENING = threading.Lock()


@dataclass
class StaticAnswer:
    """One static hit.

    ``status``: 200, 206, 304, 403 or 416. ``headers``: (name, value) str pairs
    to send as they are. ``fd``: an open descriptor of the file (the caller
    sends ``length`` bytes from ``offset`` and closes it, or calls ``close``),
    None when there is no body (304, 403, 416, HEAD). ``length`` is 0 then;
    a HEAD keeps the Content-Length of the GET. ``path``: the file's absolute
    path (symlinks as named; the kernel's resolution when the request had
    '..'), for logs; ``root`` and ``relpath``: the real directory it was
    opened beneath and the path below it ('/'-separated, no leading '/'; ""
    when unknown), for an X-Accel-Redirect. ``log``: a line to log (why a 403), or None.
    ``plain``: (directory descriptor, path opened beneath it, the file's
    os.stat_result) when the answer depends on nothing but that file and the
    PATH_INFO -- a 200 from the first map the path matches, opened directly,
    no gzip variant, no time-based header -- so a repeat of the request may
    be answered from it after reopening and checking the file (the C core's
    StaticCache); else None.
    """

    status: int
    headers: list[tuple[str, str]]
    fd: int | None = None
    offset: int = 0
    length: int = 0
    path: str = ""
    log: str | None = None
    root: str = ""
    relpath: str = ""
    plain: tuple | None = None

    def close(self) -> None:
        """Close ``fd`` (idempotent)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


@dataclass
class _Root:
    """A mapped directory (or file), opened on first use (after the worker's
    chdir and privilege drop) and kept open: a deploy that swaps the directory
    needs a reload, as in uWSGI (which resolves it once too)."""

    path: bytes
    real: bytes = b""
    real_text: str = ""  # (real, decoded once)
    fd: int = -1
    is_file: bool = False

    def ready(self) -> bool:
        if self.fd >= 0:
            return True
        with _OPENING:  # threads: one descriptor per root
            return self.fd >= 0 or self._open()

    def _open(self) -> bool:
        try:
            real = os.path.realpath(self.path)
            fd = os.open(real, getattr(os, "O_PATH", os.O_RDONLY) | os.O_CLOEXEC)
        except (OSError, ValueError):
            return False
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            os.close(fd)
            return False
        if stat.S_ISDIR(mode):
            OPENAT2.probe(fd)
        self.real, self.fd, self.is_file = real, fd, stat.S_ISREG(mode)
        self.real_text = os.fsdecode(real)
        return True


@dataclass
class _Map:
    kind: str  # "check" (DIR + PATH_INFO), "map" (DIR + rest), "map2" (DIR + PATH_INFO)
    prefix: bytes
    root: _Root

    def relative(self, raw: bytes) -> tuple[bytes, bool] | None:
        """PATH_INFO bytes -> (path below the root, exact prefix match) or None."""
        if self.kind == "check":
            return raw, False
        prefix = self.prefix
        if prefix.endswith(b"/") and raw.startswith(prefix):
            rest = raw[len(prefix):]
        elif raw == prefix:
            rest = b""
        elif raw.startswith(prefix + b"/"):
            rest = raw[len(prefix) + 1:]
        else:
            return None
        return (raw if self.kind == "map2" else rest), raw == prefix


@dataclass
class _Found:
    fd: int
    st: os.stat_result
    base: _Root
    rel: bytes  # as opened beneath base.fd (the variants are rel + ".gz")
    name: bytes  # the absolute path (for logs, rules and Content-Type)
    relpath: bytes  # name below base.real, b"" when not known
    direct: bool = False  # opened as the request named it (no index, no static-safe detour)


def _located(fd: int, base: _Root, rel: bytes) -> tuple[bytes, bytes]:
    """(absolute path, path below base) of a file opened as ``rel`` beneath
    ``base``: spelled out when ``rel`` has no '..' (symlinks left as named, as
    nginx does), else asked of /proc (the kernel's resolution)."""
    parts = [p for p in rel.split(b"/") if p and p != b"."]
    if b".." not in parts:
        below = b"/".join(parts)
        return base.real.rstrip(b"/") + b"/" + below, below
    try:
        name = os.fsencode(os.readlink("/proc/self/fd/%d" % fd))
    except OSError:
        return base.real.rstrip(b"/") + b"/" + rel, b""
    top = base.real.rstrip(b"/") + b"/"
    return name, name[len(top):] if name.startswith(top) else b""


def _under(path: bytes, base: bytes) -> bool:
    """Component-wise: is ``path`` ``base`` or below it?"""
    base = base.rstrip(b"/")
    return path == base or path.startswith(base + b"/") or base == b""


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\\\\\ud800-\udfff]")


def printable(text: str) -> str:
    """A path for a log line: control characters (a raw packet may carry a
    newline), backslashes and undecodable bytes (surrogate escapes) as \\xNN."""
    return _CONTROL.sub(lambda m: "\\x%02x" % (ord(m.group()) & 0xff), text)


def _refuse(why: str, path: str, root: bytes) -> StaticAnswer:
    return StaticAnswer(403, [("Content-Type", "text/plain"), ("Content-Length", "0")],
                        path=path, root=os.fsdecode(root), log="static: 403 for %s: %s"
                        % (printable(path), printable(why)))


@dataclass
class StaticFiles:
    """The static maps and rules of one worker; see the module docstring."""

    maps: list[_Map]
    index: list[bytes] = field(default_factory=list)
    safe: list[_Root] = field(default_factory=list)
    skip_ext: tuple[str, ...] = ()
    gzip_all: bool = False
    gzip_dirs: list[bytes] = field(default_factory=list)
    gzip_exts: tuple[str, ...] = ()
    gzip_res: list[Any] = field(default_factory=list)
    expires: list[rules.ExpiresRule] = field(default_factory=list)
    mime: rules.MimeTable = field(default_factory=rules.MimeTable)
    _gzip_dirs_real: tuple[bytes, ...] | None = None
    # A static-expires-uri* rule may match another query string: no answer
    # is then plain (StaticAnswer.plain). Set once, by __post_init__.
    _uri_expires: bool = False

    def __post_init__(self) -> None:
        self._uri_expires = any(rule.what == "uri" for rule in self.expires)

    @classmethod
    def from_config(cls, cfg: Any) -> "StaticFiles | None":
        """The worker's StaticFiles, or None when no static-map, static-map2 or
        check-static is set. Raises ConfigError naming the option for a value
        it cannot use (the option parsers normally refuse those first). A
        mimefile that cannot be read is logged and skipped, as in uWSGI."""
        maps: list[_Map] = []
        for item in cfg.check_static:
            maps.append(_Map("check", b"", _Root(os.fsencode(item))))
        for name, kind in (("static-map", "map"), ("static-map2", "map2")):
            for item in getattr(cfg, name.replace("-", "_")):
                prefix, sep, target = str(item).partition("=")
                if not sep or not target.strip():
                    raise ConfigError("%s = %r: expected /PREFIX=DIR" % (name, item))
                try:
                    raw_prefix = prefix.strip().encode("latin-1")
                except UnicodeEncodeError:
                    raw_prefix = prefix.strip().encode("utf-8")
                maps.append(_Map(kind, raw_prefix, _Root(os.fsencode(target.strip()))))
        if not maps:
            return None
        expires = []
        for attr, what, mtime in rules.EXPIRES_OPTIONS:
            for item in getattr(cfg, attr):
                try:
                    expires.append(rules.expires_rule(what, item, mtime))
                except (ValueError, re.error) as exc:
                    raise ConfigError("%s = %r: %s" % (attr.replace("_", "-"), item, exc))
        gzip_res = []
        for item in cfg.static_gzip:
            try:
                gzip_res.append(re.compile(item))
            except re.error as exc:
                raise ConfigError("static-gzip = %r: %s" % (item, exc))
        mime = rules.MimeTable()
        for path in cfg.mimefile:
            try:
                mime.read(path)
            except OSError as exc:
                log.warning("mimefile = %s: cannot be read (%s); ignored"
                            % (path, exc.strerror))
        return cls(maps=maps, index=[os.fsencode(n) for n in cfg.static_index],
                   safe=[_Root(os.fsencode(p)) for p in cfg.static_safe],
                   skip_ext=tuple(cfg.static_skip_ext), gzip_all=bool(cfg.static_gzip_all),
                   gzip_dirs=[os.fsencode(d) for d in cfg.static_gzip_dir],
                   gzip_exts=tuple(cfg.static_gzip_ext), gzip_res=gzip_res,
                   expires=expires, mime=mime)

    # -- the lookup ----------------------------------------------------------------

    def lookup(self, environ: dict) -> StaticAnswer | None:
        """A PEP 3333 environ -> the static answer, or None for the app. Never raises."""
        try:
            return self._lookup(environ)
        except Exception as exc:  # a bug here must not cost the request
            log.rate_limited("static-lookup", "static: lookup of %r failed (%s: %s); the "
                             "request goes to the app" % (environ.get("PATH_INFO"),
                                                          type(exc).__name__, exc))
            return None

    def _lookup(self, environ: dict) -> StaticAnswer | None:
        method = environ.get("REQUEST_METHOD")
        path_info = environ.get("PATH_INFO", "")
        if method not in ("GET", "HEAD") or not isinstance(path_info, str):
            return None
        if self.skip_ext and path_info.endswith(self.skip_ext):
            return None
        try:
            raw = path_info.encode("latin-1")
        except UnicodeEncodeError:
            return None
        if b"\0" in raw:
            return None
        first = True  # the first map the path matches: a repeat would try it first
        for smap in self.maps:
            rel = smap.relative(raw)
            if rel is None:
                continue
            was_first, first = first, False
            if not smap.root.ready():
                continue
            sub, exact = rel
            if smap.root.is_file:
                found = self._open_file_root(smap.root) if exact else None
            else:
                found = self._resolve(smap.root, sub.lstrip(b"/"))
            if isinstance(found, StaticAnswer):
                return found
            if found is None:
                continue
            if self.skip_ext and os.fsdecode(found.name).endswith(self.skip_ext):
                os.close(found.fd)
                return None
            return self._answer(environ, found, path_info, was_first and found.direct)
        return None

    def _open_file_root(self, root: _Root) -> _Found | StaticAnswer | None:
        try:
            fd = os.open(root.real, _FILE_FLAGS | os.O_CLOEXEC)
        except OSError as exc:
            return self._failed(exc, root.real, root.real)
        parent = _Root(os.path.dirname(root.real), os.path.dirname(root.real))
        return self._regular(fd, parent, os.path.basename(root.real))

    def _resolve(self, root: _Root, rel: bytes) -> _Found | StaticAnswer | None:
        """Open ``rel`` beneath ``root`` (or a static-safe directory); a directory
        gives its first static-index file."""
        base, detour = root, False
        try:
            fd = open_beneath(root.fd, rel, _FILE_FLAGS)
        except OSError as exc:
            if exc.errno == errno.EACCES and self._is_dir(root, rel):
                fd = -1  # an execute-only directory: its index may still be readable
            elif exc.errno != errno.EXDEV:
                return self._failed(exc, os.path.join(root.real, rel), root.real)
            else:
                opened = self._reopen_safe(root, rel)
                if opened is None or isinstance(opened, StaticAnswer):
                    return opened
                fd, base, rel = opened
                detour = True
        st = os.fstat(fd) if fd >= 0 else None
        if st is None or stat.S_ISDIR(st.st_mode):
            if fd >= 0:
                os.close(fd)
            for name in self.index:
                found = self._resolve_index(base, rel.rstrip(b"/") + b"/" + name
                                            if rel.strip(b"/") else name)
                if found is not None:
                    return found
            return None
        found = self._regular(fd, base, rel, st)
        if found is not None and not detour:
            # Opened as the request named it. After an EXDEV detour (an absolute
            # or '..' symlink) ``rel`` is the link's target: a repeat opening
            # that would never see the link change, so it is not "direct".
            found.direct = True
        return found

    @staticmethod
    def _is_dir(root: _Root, rel: bytes) -> bool:
        try:
            fd = open_beneath(root.fd, rel, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            return False
        os.close(fd)
        return True

    def _resolve_index(self, base: _Root, rel: bytes) -> _Found | StaticAnswer | None:
        try:
            fd = open_beneath(base.fd, rel, _FILE_FLAGS)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return _refuse("resolves outside %s" % os.fsdecode(base.real),
                               os.fsdecode(os.path.join(base.real, rel)), base.real)
            return self._failed(exc, os.path.join(base.real, rel), base.real)
        return self._regular(fd, base, rel)

    def _reopen_safe(self, root: _Root,
                     rel: bytes) -> tuple[int, _Root, bytes] | StaticAnswer | None:
        """EXDEV: the path leads out of ``root``. Allowed when its real path is
        under ``root`` itself (an absolute symlink back in) or a static-safe
        directory; opened again beneath that one (a swap in between gives EXDEV
        again, and a 403)."""
        real = os.path.realpath(os.path.join(root.real, rel))
        for base in [root] + self.safe:
            if base.ready() and not base.is_file and _under(real, base.real):
                sub = os.path.relpath(real, base.real) if real != base.real else b"."
                try:
                    return open_beneath(base.fd, sub, _FILE_FLAGS), base, sub
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        return self._failed(exc, real, base.real)
        return _refuse("resolves to %s, outside %s (static-safe DIR allows a directory)"
                       % (os.fsdecode(real), os.fsdecode(root.real)),
                       os.fsdecode(os.path.join(root.real, rel)), root.real)

    @staticmethod
    def _failed(exc: OSError, path: bytes, root: bytes) -> StaticAnswer | None:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return _refuse("permission denied (the worker's user may not read it)",
                           os.fsdecode(path), root)
        return None  # missing, not a directory, too long, a loop: not here

    @staticmethod
    def _regular(fd: int, base: _Root, rel: bytes,
                 st: os.stat_result | None = None) -> _Found | None:
        """Keep ``fd`` when it is a regular file (blocking again), else close it."""
        try:
            st = st or os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return None
            os.set_blocking(fd, True)
            name, below = _located(fd, base, rel)
            return _Found(fd, st, base, rel, name, below)
        except BaseException:
            os.close(fd)
            raise

    # -- the answer ----------------------------------------------------------------

    def _wants_variant(self, name: bytes, text: str) -> bool:
        if self.gzip_all:
            return True
        if self._gzip_dirs_real is None:
            self._gzip_dirs_real = tuple(os.path.realpath(d) for d in self.gzip_dirs)
        return bool((self._gzip_dirs_real and name.startswith(self._gzip_dirs_real))
                    or (self.gzip_exts and text.endswith(self.gzip_exts))
                    or any(r.search(text) for r in self.gzip_res))

    def _variant(self, found: _Found, accept: str | None) -> tuple[_Found | None, str | None, bool]:
        """-> (the variant's file, its coding, whether a variant exists at all).
        FILE.br and FILE.gz are looked up beside the name the file was opened
        by (as nginx's gzip_static), beneath the same directory."""
        if found.base.fd < 0:
            return None, None, False
        accepted = rules.accepted_codings(accept)
        exists = False
        for coding, suffix in _VARIANTS:
            fd = try_beneath(found.base.fd, found.rel + suffix, _FILE_FLAGS)
            if fd < 0:
                continue
            variant = self._regular(fd, found.base, found.rel + suffix)
            if variant is None:
                continue
            exists = True
            if coding in accepted:
                return variant, coding, True
            os.close(variant.fd)
        return None, None, exists

    def _answer(self, environ: dict, found: _Found, path_info: str,
                plain: bool) -> StaticAnswer:
        """The answer for ``found``; ``plain``: it came from the first map the
        path matches, opened directly (see StaticAnswer.plain)."""
        name = os.fsdecode(found.name)
        ctype = self.mime.guess(name)
        headers: list[tuple[str, str]] = []
        coding = None
        if self._wants_variant(found.name, name):
            plain = False  # Accept-Encoding chooses the file
            variant, coding, exists = self._variant(found, environ.get("HTTP_ACCEPT_ENCODING"))
            if variant is not None:
                os.close(found.fd)
                found = variant
            if exists:
                headers.append(("Vary", "Accept-Encoding"))
        st = found.st
        mtime, size = int(st.st_mtime), st.st_size
        tag = rules.etag(mtime, size)
        validators = [("Last-Modified", rules.http_date(mtime)), ("ETag", tag)]
        caching = rules.caching_headers(self.expires, name, str(environ.get("REQUEST_URI", "")),
                                        path_info, ctype, mtime, time.time()) if self.expires else []
        answer = StaticAnswer(200, [], found.fd, 0, size,
                              name if coding is None else os.fsdecode(found.name), None,
                              found.base.real_text, os.fsdecode(found.relpath))
        inm = environ.get("HTTP_IF_NONE_MATCH")
        if inm is not None:
            not_modified = rules.none_match(str(inm), tag)
        else:
            ims = rules.parse_http_date(environ.get("HTTP_IF_MODIFIED_SINCE"))
            not_modified = ims is not None and mtime <= ims
        if not_modified:
            answer.close()
            answer.status, answer.length = 304, 0
            answer.headers = validators + headers + caching
            return answer
        head = environ.get("REQUEST_METHOD") == "HEAD"
        wanted = None if head else rules.parse_range(environ.get("HTTP_RANGE"), size)
        if wanted is not None and not rules.if_range_holds(environ.get("HTTP_IF_RANGE"),
                                                           tag, mtime):
            wanted = None
        if wanted == "unsatisfiable":
            answer.close()
            answer.status, answer.length = 416, 0
            answer.headers = [("Content-Range", "bytes */%d" % size), ("Content-Length", "0"),
                              ("Accept-Ranges", "bytes")] + validators + headers
            return answer
        answer.headers = [("Content-Type", ctype)]
        if coding:
            answer.headers.append(("Content-Encoding", coding))
        if isinstance(wanted, tuple):
            answer.status, (answer.offset, answer.length) = 206, wanted
            answer.headers.append(("Content-Range", "bytes %d-%d/%d" % (
                answer.offset, answer.offset + answer.length - 1, size)))
        answer.headers += [("Content-Length", str(answer.length)), ("Accept-Ranges", "bytes")]
        answer.headers += validators + headers + caching
        if (plain and answer.status == 200 and not caching and b".." not in found.rel
                and not self._uri_expires):
            # No Expires now: none will be for this PATH_INFO.
            answer.plain = (found.base.fd, found.rel, st)
        if head:
            answer.close()
            answer.length = 0
        return answer
