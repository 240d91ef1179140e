"""uWSGI's value expansion: magic variables, ``$(ENV)``, ``@(file)``, ``%(key)``.

Checked against uWSGI 2.0 (``core/uwsgi.c``, ``core/utils.c``,
``core/config.c``):

- Magic variables (``%d``, ``%n`` ...) are replaced while a file is read
  (``magic_sub``), so they always describe the file they are written in. A
  ``%`` followed by a character that is not a magic variable is replaced by
  *nothing* in uWSGI (its table maps every other byte to ""); uwsgigw does the
  same and warns. ``%%`` is a literal ``%``; ``%(`` is left for the last pass.
- After every file is read, three passes run over all values in order
  (``uwsgi_apply_config_pass``): ``$(VAR)`` (environment), ``@(FILE)`` (file
  contents, one trailing newline removed), ``%(KEY)`` (another key's value).
  A reference that resolves to nothing is left as written: that is why
  ``log-format``'s request-time ``%(addr)`` survives.
- ``%(KEY)`` looks KEY up by its exact spelling, first occurrence wins
  (``uwsgi_get_exported_opt``), and may point forward in the file; the
  substituted text is expanded again. ``%(a + b)`` with spaces is uWSGI's
  pipeline arithmetic (``uwsgi_manage_placeholder``): tokens are numbers or
  keys, ``+ - * /`` apply to the running value left to right, no operator
  means string concatenation, ``++``/``--`` increment, division by 0 gives 0.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import socket
import sys
import time
from typing import Callable, Iterable

from .. import __version__

Lookup = Callable[[str], "str | None"]
MAX_EXPANSIONS = 200  # per value; a self-reference (a = %(a)) would never end
_NUM_PREFIX = re.compile(r"\s*[+-]?[0-9]+")
_STARTUP = time.time()


class ExpansionLoop(Exception):
    """A value keeps referring to itself."""


def _host_table() -> dict[str, str]:
    """Magic variables that do not depend on the file (uwsgi.c sets these once)."""
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return {
        "%": "%", "(": "%(", "[": "\x1b",
        "h": socket.gethostname(), "k": str(os.cpu_count() or 1),
        "v": os.getcwd(), "V": __version__, "b": sys.executable,
        "u": str(uid), "U": user, "g": str(gid), "G": group,
        "t": str(int(_STARTUP)), "T": str(int(_STARTUP * 1_000_000)),
    }


def magic_table(path: str, section: str, first: dict[str, str] | None) -> dict[str, str]:
    """The magic variables for one INI file (``config_magic_table_fill``).

    ``%p`` is the absolute path with symlinks resolved, unless the file
    itself is a symlink (then its own absolute path, as uWSGI does); ``%d``
    ends with a slash; ``%x`` is the section asked for with ``FILE:SECTION``
    (empty otherwise). Upper-case variants refer to the first file loaded.
    """
    table = _host_table()
    full = os.path.abspath(path) if os.path.islink(path) else os.path.realpath(path)
    directory, name = os.path.split(full)
    stem, dot, ext = name.rpartition(".")
    table.update({
        "o": path, "p": full, "s": name, "d": directory.rstrip("/") + "/",
        "c": os.path.basename(directory), "e": ext if dot else "",
        "n": stem if dot else name, "x": section, "j": "",
    })
    try:
        table["i"] = str(os.lstat(full).st_ino)
    except OSError:
        table["i"] = ""
    parts = [p for p in directory.split("/") if p]
    for i in range(10):
        table[str(i)] = parts[i] if i < len(parts) else ""
    base = first or table
    for letter in "odspcenxij":
        table[letter.upper()] = base[letter]
    return table


def apply_magic(text: str, table: dict[str, str], warn: Callable[[str], None]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%" and i + 1 < len(text):
            name = text[i + 1]
            value = table.get(name)
            if value is None:
                warn("%%%s is not a uWSGI magic variable; like uWSGI, uwsgigw "
                     "replaces it with nothing (write %%%%%s for a literal %%%s)"
                     % (name, name, name))
                value = ""
            elif name == "j":
                warn("%j (a hash of the file name) is not supported; it is empty")
            out.append(value)
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _find_close(text: str, start: int) -> int:
    """Index of the ``)`` closing the ``(`` at ``start`` (nested pairs allowed)."""
    depth = 0
    for j in range(start, len(text)):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return -1


def expand(text: str, symbol: str, hook: Lookup) -> tuple[str, list[str]]:
    """Replace every ``SYMBOL(key)`` the hook resolves; -> (text, unresolved keys).

    Substituted text is scanned again, as uWSGI restarts its scan after each
    substitution, so a reference to a value with references works.
    """
    unresolved: list[str] = []
    i = 0
    count = 0
    opener = symbol + "("
    while True:
        i = text.find(opener, i)
        if i < 0:
            return text, unresolved
        close = _find_close(text, i + 1)
        if close < 0:
            return text, unresolved
        key = text[i + 2:close]
        value = hook(key)
        if value is None:
            if key not in unresolved:
                unresolved.append(key)
            i = close + 1
            continue
        count += 1
        if count > MAX_EXPANSIONS:
            raise ExpansionLoop(key)
        text = text[:i] + value + text[close + 1:]


def env_hook(environ: dict[str, str] | os._Environ) -> Lookup:
    """``$(VAR)``, with the ``$(VAR:-default)`` and ``$(VAR-default)`` fallbacks
    of newer uWSGI (default when unset or empty / when unset)."""
    def hook(key: str) -> str | None:
        if ":-" in key:
            name, _, default = key.partition(":-")
            return environ.get(name) or default
        if "-" in key:
            name, _, default = key.partition("-")
            return environ.get(name, default)
        return environ.get(key)
    return hook


def file_hook(warn: Callable[[str], None]) -> Lookup:
    def hook(path: str) -> str:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                data = f.read()
        except OSError as exc:
            # uWSGI logs the error and substitutes an empty string.
            warn("@(%s): cannot read the file (%s); it expands to nothing"
                 % (path, exc.strerror))
            return ""
        if data.endswith(("\n", "\r")):
            data = data[:-1]
        return data
    return hook


def _strtoll(text: str) -> int:
    match = _NUM_PREFIX.match(text)
    return int(match.group()) if match else 0


def _div(a: int, b: int) -> int:
    if b == 0:
        return 0
    quotient = abs(a) // abs(b)  # C division truncates toward zero
    return quotient if (a >= 0) == (b >= 0) else -quotient


_OPS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b,
    "*": lambda a, b: a * b, "/": _div,
}


def placeholder(key: str, lookup: Lookup) -> str | None:
    """``%(KEY)`` or uWSGI's ``%(a + b * 2)`` pipeline (see module doc)."""
    if " " not in key:
        return lookup(key)
    current: str | None = None
    op: str | None = None
    for token in (t for t in key.split(" ") if t):
        if token in _OPS:
            op = token
            continue
        if token in ("++", "--"):
            if current is not None:
                current = str(_strtoll(current) + (1 if token == "++" else -1))
            op = None
            continue
        value = token if token.isdigit() else (lookup(token) or "")
        if op is None:
            current = (current or "") + value
        else:
            current = str(_OPS[op](_strtoll(current or ""), _strtoll(value)))
        op = None
    return current


def split_words(text: str) -> Iterable[str]:
    """uWSGI's token split for ``for =`` (runs of spaces are one separator)."""
    return [w for w in text.split(" ") if w]
