"""The header rules of static answers: HTTP dates, validators, Range,
Accept-Encoding, Content-Type and the Expires family. Pure functions and small
tables, no I/O at request time (``cycle.static`` drives them).

RFC 9110 where uWSGI's ``core/static.c`` is wrong or silent: ``gzip;q=0`` is a
refusal, unknown range units and multi-range requests are ignored (the whole
file), a suffix range longer than the file is the whole file, If-Range is
honoured, a 304 keeps the caching headers.
"""

from __future__ import annotations

import calendar
import mimetypes
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_tz
from typing import Iterable

OCTET_STREAM = "application/octet-stream"

# -- HTTP dates -------------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


_DATES: dict[int, str] = {}


def http_date(epoch: float) -> str:
    """Seconds since the epoch -> IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``).
    Out-of-range values are clamped to the years 1970..9999. The last few
    hundred answers are remembered (the same files' mtimes come back)."""
    epoch = min(max(int(epoch), 0), 253402300799)
    text = _DATES.get(epoch)
    if text is None:
        if len(_DATES) > 512:
            _DATES.clear()
        t = time.gmtime(epoch)
        text = _DATES[epoch] = "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
            _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year,
            t.tm_hour, t.tm_min, t.tm_sec)
    return text


def parse_http_date(text: str | None) -> int | None:
    """An HTTP-date in any of RFC 9110's three forms -> epoch seconds, or None
    when it is not one (the header is then ignored, as RFC 9110 says)."""
    if not text or len(text) > 64:
        return None
    try:
        parts = parsedate_tz(text)
        if parts is None or parts[0] < 1900:
            return None
        return calendar.timegm(parts[:6] + (0, 1, 0)) - (parts[9] or 0)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


# -- validators ---------------------------------------------------------------------

def etag(mtime: int, size: int) -> str:
    """nginx's strong ETag: ``"<mtime hex>-<size hex>"``."""
    return '"%x-%x"' % (max(mtime, 0), size)


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def none_match(header: str, tag: str) -> bool:
    """If-None-Match (weak comparison): True when it matches ``tag`` (-> 304)."""
    header = header.strip()
    if header == "*":
        return True
    mine = _opaque(tag)
    return any(_opaque(t) == mine for t in header.split(",") if t.strip())


def if_range_holds(header: str | None, tag: str, mtime: int) -> bool:
    """If-Range: True when the Range may be honoured. An entity tag must match
    strongly (a weak one never does); a date must equal Last-Modified exactly."""
    if header is None:
        return True
    header = header.strip()
    if header.startswith(("W/", '"')):
        return header == tag
    when = parse_http_date(header)
    return when is not None and when == mtime


# -- Range --------------------------------------------------------------------------

_RANGE_SPEC = re.compile(r"\s*([0-9]*)\s*-\s*([0-9]*)\s*\Z")


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """A Range header against a file of ``size`` bytes.

    -> ``(offset, length)`` for one satisfiable byte range (206);
    -> ``"unsatisfiable"`` for one byte range that selects nothing (416);
    -> None to ignore it and send the whole file (no header, another unit,
    bad syntax, several ranges, an empty file).
    """
    if not header or size <= 0 or len(header) > 4096:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _RANGE_SPEC.match(spec)
    if not match:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        suffix = min(suffix, size)  # longer than the file: the whole file
        return size - suffix, suffix
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid range-spec: ignored
    if start >= size:
        return "unsatisfiable"
    end = min(end, size - 1)
    return start, end - start + 1


# -- Accept-Encoding ------------------------------------------------------------------

_CODINGS: dict[str, frozenset[str]] = {}


def accepted_codings(header: str | None) -> frozenset[str]:
    """The content codings of ``("br", "gzip")`` the client accepts (q > 0).

    ``gzip;q=0`` refuses gzip; ``*`` stands for codings not named; ``x-gzip``
    is gzip (RFC 9110 8.4.1.3). Browsers send a handful of spellings: the
    answers are remembered."""
    if not header:
        return frozenset()
    known = _CODINGS.get(header)
    if known is None:
        if len(_CODINGS) > 256:
            _CODINGS.clear()
        known = _CODINGS[header] = _accepted(header) if len(header) < 1024 else frozenset()
    return known


def _accepted(header: str) -> frozenset[str]:
    qs: dict[str, float] = {}
    for item in header.split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        if name == "x-gzip":
            name = "gzip"
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not q == q:  # nan
                    q = 0.0
        if name:
            qs[name] = max(q, qs.get(name, q))
    star = qs.get("*", 0.0)
    return frozenset(c for c in ("br", "gzip") if qs.get(c, star) > 0)


# -- Content-Type -------------------------------------------------------------------

_EXT = re.compile(r"\.([A-Za-z0-9]+)\Z")


def extension(name: str) -> str | None:
    """uWSGI's extension rule: the letters and digits after the last dot."""
    match = _EXT.search(name)
    return match.group(1) if match else None


class MimeTable:
    """extension -> Content-Type: Python's ``mimetypes`` table (which reads the
    system's mime.types files, as uWSGI reads /etc/mime.types), then each
    ``mimefile`` in order (later lines win). Unknown -> application/octet-stream
    (uWSGI sends no Content-Type; nginx sends its default_type)."""

    def __init__(self, files: Iterable[str] = ()) -> None:
        db = mimetypes.MimeTypes()  # Python's own table; then the system's files,
        for known in mimetypes.knownfiles:  # as mimetypes.init() reads them
            try:
                db.read(known)
            except (OSError, UnicodeDecodeError):
                pass
        self.types: dict[str, str] = {}
        for strict in (False, True):
            for ext, mime in db.types_map[strict].items():
                self.types[ext.lstrip(".")] = mime
        for path in files:
            self.read(path)

    def read(self, path: str) -> None:
        """Read a ``type ext ext ...`` file; raises OSError when it cannot be read."""
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = line.split("#", 1)[0].split()
                if len(words) >= 2 and "/" in words[0]:
                    for ext in words[1:]:
                        self.types[ext.lstrip(".")] = words[0]

    def guess(self, name: str) -> str:
        ext = extension(name)
        if ext is None:
            return OCTET_STREAM
        return self.types.get(ext) or self.types.get(ext.lower()) or OCTET_STREAM


# -- Expires ------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpiresRule:
    """One static-expires* line: ``what`` is "path", "uri", "path_info" or
    "type"; ``match`` a compiled regex (or the exact type); ``mtime``: count
    from the file's mtime instead of now."""

    what: str
    match: object
    seconds: int
    mtime: bool

    def applies(self, path: str, uri: str, path_info: str, ctype: str) -> bool:
        if self.what == "type":
            return self.match == ctype
        subject = {"path": path, "uri": uri, "path_info": path_info}[self.what]
        return self.match.search(subject) is not None  # type: ignore[attr-defined]


# uWSGI's order (core/static.c): filename, PATH_INFO, REQUEST_URI, then type;
# each "now" list before its -mtime list. The first rule that matches wins.
EXPIRES_OPTIONS = (
    ("static_expires", "path", False), ("static_expires_mtime", "path", True),
    ("static_expires_path_info", "path_info", False),
    ("static_expires_path_info_mtime", "path_info", True),
    ("static_expires_uri", "uri", False), ("static_expires_uri_mtime", "uri", True),
    ("static_expires_type", "type", False), ("static_expires_type_mtime", "type", True),
)


def expires_rule(what: str, text: str, mtime: bool) -> ExpiresRule:
    """One option value (already checked by the option parser) -> a rule;
    raises ValueError (re.error) on a malformed one."""
    if what == "type":
        mime, sep, seconds = text.strip().partition("=")
        if not sep:
            raise ValueError("expected TYPE=SECONDS")
        return ExpiresRule(what, mime.strip(), int(seconds.strip()), mtime)
    pattern, sep, seconds = text.strip().partition(" ")
    if not sep:
        raise ValueError("expected REGEX SECONDS")
    return ExpiresRule(what, re.compile(pattern), int(seconds.strip()), mtime)


def caching_headers(rules: Iterable[ExpiresRule], path: str, uri: str, path_info: str,
                    ctype: str, mtime: int, now: float) -> list[tuple[str, str]]:
    """Expires and Cache-Control max-age from the first matching rule; they
    agree: max-age is the seconds from ``now`` to Expires, at least 0."""
    for rule in rules:
        if rule.applies(path, uri, path_info, ctype):
            if rule.mtime:
                expires = mtime + rule.seconds
                max_age = max(0, expires - int(now))
            else:
                expires = int(now) + rule.seconds
                max_age = rule.seconds
            return [("Expires", http_date(expires)),
                    ("Cache-Control", "max-age=%d" % max_age)]
    return []
