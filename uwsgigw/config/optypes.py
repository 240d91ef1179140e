"""Value parsers for the option table: one per kind, shared by INI, environment
and command line, so a value means the same thing wherever it is written.

They follow uWSGI's own option functions (``core/uwsgi.c``) where a user could
notice a difference, and are stricter where uWSGI silently does something
surprising (``atoi("two")`` is 0 there; here it is an error that names the
option, the value and what was expected):

- booleans (``uwsgi_opt_true``): ``false``/``off``/``no`` (any case) and
  exactly ``0`` are off; anything else, even an empty value, is on.
- numbers (``uwsgi_opt_set_int``/``_64bit``): plain decimal integers.
  uWSGI reads them with ``strtoul`` and has no ``k``/``m``/``g`` suffixes, so
  ``64k`` is refused here instead of silently becoming 64.
- ``buffer-size`` (``uwsgi_opt_set_16bit``): uWSGI clamps values above 65535;
  the vars block size is a 16-bit field. 65536 (written in many configs,
  including the seed) becomes 65535; anything larger is refused.
- ``chmod-socket``: three octal digits; given without a value it means 666,
  as in uWSGI.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable

Warn = Callable[[str], None]

FALSE_WORDS = frozenset({"false", "off", "no"})
BOOL_WORDS = FALSE_WORDS | {"true", "on", "yes"}
_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)\Z")
_SUFFIX_RE = re.compile(r"[0-9]+(\.[0-9]+)?\s*[kKmMgG][bB]?\Z")
_MODE_RE = re.compile(r"0?[0-7]{3}\Z")


class BadValue(ValueError):
    """A value that does not fit its option; ``expected`` says what would."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def parse_bool(text: str) -> bool:
    value = text.strip()
    return not (value.lower() in FALSE_WORDS or value == "0")


def parse_int(text: str, warn: Warn, *, minimum: int | None = 0,
              maximum: int | None = None, what: str = "a whole number",
              example: str = "4") -> int:
    value = text.strip()
    if not _INT_RE.match(value):
        if value.lower() in BOOL_WORDS:
            # uWSGI reads "true" with atoi/strtoul and gets 0; some real
            # configs say "post-buffering = true" (see the INI corpus). Do what
            # uWSGI does, but say so.
            warn("%r is not a number; uWSGI reads it as 0, and so does uwsgigw "
                 "(write %s, e.g. %s)" % (text, what, example))
            return 0
        if _SUFFIX_RE.match(value):
            raise BadValue("%s without a unit suffix (uWSGI has no k/m/g "
                           "suffixes), e.g. %s" % (what, example))
        raise BadValue("%s, e.g. %s" % (what, example))
    number = int(value)
    if minimum is not None and number < minimum:
        raise BadValue("%s of at least %d" % (what, minimum))
    if maximum is not None and number > maximum:
        raise BadValue("%s of at most %d" % (what, maximum))
    return number


def parse_seconds(text: str, warn: Warn, *, minimum: float = 0.0) -> float:
    value = text.strip()
    if not _FLOAT_RE.match(value):
        raise BadValue("a number of seconds, e.g. 4 or 0.5")
    number = float(value)
    if number <= minimum:
        raise BadValue("a number of seconds greater than %g" % minimum)
    return number


def parse_buffer_size(text: str, warn: Warn) -> int:
    number = parse_int(text, warn, minimum=1, maximum=65536,
                       what="a size in bytes from 1 to 65535", example="8192")
    # 65536 is what people write for "64k"; uWSGI clamps it, so do we.
    return min(number, 65535)


def parse_mode(text: str, warn: Warn) -> str:
    value = text.strip()
    if value == "" or value.lower() in ("true", "on", "yes", "1"):
        return "666"  # uWSGI: chmod-socket without a value means 666
    if not _MODE_RE.match(value):
        raise BadValue("three octal digits such as 660 or 664")
    return value[-3:]


def parse_choice(text: str, choices: tuple[str, ...]) -> str:
    value = text.strip().lower()
    if value not in choices:
        raise BadValue("one of " + ", ".join(choices))
    return value


def check_text(text: str) -> str:
    value = text.strip()
    if not value:
        raise BadValue("a value")
    return value


def check_socket(text: str, warn: Warn) -> str:
    """uWSGI's socket spelling: a unix path, ``@abstract``, ``host:port`` or ``:port``."""
    value = check_text(text)
    if value.startswith(("/", ".", "@", "~")) or ":" not in value:
        return value
    host, _, port = value.rpartition(":")
    if host.startswith("[") != host.endswith("]"):
        raise BadValue("a unix socket path, HOST:PORT, :PORT or [IPV6]:PORT")
    if not port.isdigit() or int(port) > 65535:
        raise BadValue("a unix socket path, HOST:PORT, :PORT or [IPV6]:PORT "
                       "with a port from 1 to 65535")
    if int(port) == 0:
        warn("port 0 means a random port, which nginx's uwsgi_pass cannot "
             "find; pick a fixed port")
    return value


def check_key_value(text: str) -> str:
    value = text.strip()
    key, sep, _ = value.partition("=")
    if not sep or not key.strip():
        raise BadValue("KEY=VALUE")
    return value


def check_mount(text: str) -> str:
    value = text.strip()
    prefix, sep, target = value.partition("=")
    if not sep or not prefix.startswith("/") or not target.strip():
        raise BadValue("/PREFIX=module[:callable] or /PREFIX=path/to/app.py")
    return value


def check_owner(text: str) -> str:
    value = check_text(text)
    if value.count(":") > 1:
        raise BadValue("USER or USER:GROUP")
    return value


# -- uwsgi-allow-from's networks (checked against peers by peers.AllowList) ------

_SPLIT_NETWORKS = re.compile(r"[\s,]+")

EXPECTED = ("IP networks separated by commas or spaces, e.g. 10.0.0.0/8, "
            "192.168.1.5, ::1, fd00::/8")


def parse_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``"10.0.0.0/8, ::1"`` -> networks; raises BadValue on anything else.

    Host bits set (``10.1.2.3/8``) are refused rather than silently masked:
    that is usually a typo for a narrower network.
    """
    words = [w for w in _SPLIT_NETWORKS.split(text.strip()) if w]
    if not words:
        raise BadValue(EXPECTED)
    networks = []
    for word in words:
        try:
            networks.append(ipaddress.ip_network(word, strict=True))
        except ValueError as exc:
            raise BadValue("%s (%r: %s)" % (EXPECTED, word, exc)) from None
    return networks


def normalise(text: str) -> str:
    """The option parser: validate one value, keep it in canonical spelling."""
    return ", ".join(str(n) for n in parse_networks(text))
