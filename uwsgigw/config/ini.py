"""The uWSGI INI reader: ``[uwsgi]`` files as uWSGI's ``core/ini.c`` reads them.

- ``FILE[:SECTION]``, default section ``uwsgi``; other sections are skipped.
  ``ini = other.ini[:section]`` (also ``include``/``inherit``) is read at that
  point, "expand asap"; ``ini = :section`` reads another section of the file
  read last (uWSGI's rule, even after an include). Relative paths are
  relative to the current directory, as in uWSGI (``%d`` means "next to
  this file").
- A line is a comment when its first non-blank character is ``;`` or ``#``.
  ``key = value`` splits at the first ``=``; blanks around both are dropped
  (so CRLF files work); a key without ``=`` has an empty value, which turns a
  boolean on. "Blank" includes Unicode spaces such as U+00A0, which uWSGI
  keeps: the seed file, copied from a web page, has them around every ``=``
  and ``#``.
- Unlike uWSGI, `` # comment`` and `` ; comment`` after a value are removed:
  the seed file writes ``uid=www-data # Ubuntu...``. A ``#`` or ``;`` with no
  blank before it (``http://x/#frag``, ``a;b``) stays.
- Logic blocks (``core/config.c``): ``if-env``, ``if-not-env``, ``if-opt``,
  ``if-not-opt``, ``if-exists``, ``if-not-exists``, ``if-file``, ``if-dir``
  (and their negations), ``if-hostname``, ``if-plugin``, ``if-reload``, ``for``,
  ``for-glob``, ``for-times``, ``for-readline`` ... ``endif``/``endfor``/``end``,
  and ``else``. As in uWSGI the condition is evaluated for every line of the
  block, ``%(_)`` is the tested value (the env value, the option value, the
  path, the loop item), a ``for`` repeats each line for every item, and
  blocks do not nest: an opener inside an active block replaces it.

The reader returns entries in uWSGI's order; ``ini_expand`` then resolves
``$(..)``, ``@(..)`` and ``%(..)`` over all of them (see ``finish``).
"""

from __future__ import annotations

import glob
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Mapping

from . import ini_expand, options

END_KEYS = frozenset({"end", "endif", "end-if", "endfor", "end-for"})
INCLUDE_KEYS = frozenset({"ini", "include", "inherit"})
PLACEHOLDER_KEYS = frozenset({"set-placeholder", "set-ph"})
_IF = {
    "if-env": "env", "ifenv": "env", "if-not-env": "!env",
    "if-opt": "opt", "if-not-opt": "!opt",
    "if-exists": "exists", "ifexists": "exists", "if-not-exists": "!exists",
    "if-file": "file", "if-not-file": "!file",
    "if-dir": "dir", "ifdir": "dir", "if-directory": "dir", "if-not-dir": "!dir",
    "if-reload": "reload", "if-not-reload": "!reload",
    "if-hostname": "hostname", "if-not-hostname": "!hostname",
    "if-plugin": "plugin", "ifplugin": "plugin", "if-not-plugin": "!plugin",
}
_FOR = frozenset({"for", "for-glob", "for-times", "for-readline"})
LOGIC_KEYS = frozenset(_IF) | _FOR | END_KEYS | {"else"}
DIRECTIVES = LOGIC_KEYS | INCLUDE_KEYS | PLACEHOLDER_KEYS | {"set"}
_INLINE_COMMENT = re.compile(r"\s[#;]")
_ENV_REF = re.compile(r"\$\(([^()]*)\)")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://", re.I)
MAX_INCLUDE_DEPTH = 16


class IniError(Exception):
    """A problem that stops start-up (and fails --check)."""


@dataclass
class Entry:
    key: str
    value: str
    file: str
    line: int
    bare: bool = False  # written without "="
    placeholder: bool = False  # from set-placeholder: never an option
    unset_env: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return "%s:%d" % (self.file, self.line)


@dataclass
class IniResult:
    entries: list[Entry]
    warnings: list[str]
    missing: list[str]  # includes that do not exist: errors unless --check
    referenced: set[str]  # keys used by %(key) or if-opt
    files: list[str]


@dataclass
class _Block:
    opener: str
    arg: str
    origin: str
    kind: str  # a value of _IF, a for-* key, or "else"
    items: list[str] = field(default_factory=list)  # for loops


def split_spec(spec: str) -> tuple[str, str]:
    """``FILE[:SECTION]`` -> (file, section); uWSGI splits at the last colon."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, ""
    path, _, section = spec.rpartition(":")
    return path, section


def strip_inline_comment(text: str) -> str:
    match = _INLINE_COMMENT.search(text)
    return text[:match.start()].rstrip() if match else text


class Reader:
    """Reads INI files into entries; one Reader per configuration load."""

    def __init__(self, environ: Mapping[str, str], *, placeholders: Mapping[str, str] = {},
                 hostname: str | None = None) -> None:
        self.environ = environ
        self.entries: list[Entry] = []
        self.warnings: list[str] = []
        self.missing: list[str] = []
        self.referenced: set[str] = set()
        self.files: list[str] = []
        self._placeholders = dict(placeholders)
        self._hostname = hostname or socket.gethostname()
        self._block: _Block | None = None
        self._failed = False  # the last if test failed (for "else")
        self._last_file: str | None = None
        self._first_table: dict[str, str] | None = None
        self._stack: list[tuple[str, str]] = []

    # -- files -------------------------------------------------------------

    def load(self, spec: str, origin: str = "command line") -> None:
        """Read ``FILE[:SECTION]`` as given to --ini (a missing file is an error)."""
        self._read_spec(spec, origin, top=True)

    def _read_spec(self, spec: str, origin: str, top: bool) -> None:
        if _SCHEME.match(spec):
            raise IniError("%s: ini %s: uwsgigw reads INI files from disk only" % (origin, spec))
        path, section = split_spec(spec)
        if path == "":
            if self._last_file is None:
                raise IniError("%s: ini = %s: no INI file was read before" % (origin, spec))
            path = self._last_file
        if not os.path.isfile(path):
            hint = "" if top else (" (relative paths are relative to the current "
                                   "directory, as in uWSGI; %d is this file's directory)")
            message = "%s: ini file %s does not exist%s" % (origin, path, hint)
            if top:
                raise IniError(message)
            self.missing.append(message)
            return
        key = (os.path.realpath(path), section or "uwsgi")
        if key in self._stack or len(self._stack) >= MAX_INCLUDE_DEPTH:
            raise IniError("%s: ini %s includes itself" % (origin, spec))
        self._stack.append(key)
        try:
            self._read_file(path, section, origin)
        finally:
            self._stack.pop()

    def _read_file(self, path: str, section: str, origin: str) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read().decode("utf-8", "surrogateescape")
        except OSError as exc:
            raise IniError("%s: cannot read ini file %s: %s" % (origin, path, exc.strerror)) from None
        self._last_file = path
        if path not in self.files:
            self.files.append(path)
        table = ini_expand.magic_table(path, section, self._first_table)
        if self._first_table is None:
            self._first_table = table
        wanted = section or "uwsgi"
        current, found = "", False
        outer, self._block = self._block, None  # blocks do not span files
        for number, raw in enumerate(data.split("\n"), 1):
            # uWSGI strips space, tab and CR; any Unicode blank is stripped here:
            # the seed file, copied from a web page, is full of U+00A0.
            line = raw.strip()
            if not line or line[0] in ";#":
                continue
            if line[0] == "[":
                current = line[1:-1]  # uWSGI drops the last character, whatever it is
                found = found or current == wanted
                continue
            if current != wanted:
                continue
            self._line(strip_inline_comment(line), path, number, table)
        if not found:
            self.warnings.append("%s: there is no [%s] section in %s" % (origin, wanted, path))
        if self._block is not None:
            self.warnings.append("%s: %s = %s has no endif/endfor; the block ends with the file"
                                 % (self._block.origin, self._block.opener, self._block.arg))
        self._block = outer

    def _line(self, line: str, path: str, number: int, table: dict[str, str]) -> None:
        key, sep, value = line.partition("=")
        key, value = key.rstrip(), value.strip()
        where = "%s:%d" % (path, number)
        if options.find(key) is not None:
            value = ini_expand.apply_magic(value, table, lambda m: self.warnings.append(
                "%s: %s" % (where, m)))
        else:
            value = ini_expand.apply_magic(value, table, lambda m: None)
        if not key:
            self.warnings.append("%s: a line without a key (%r) is ignored" % (where, line))
            return
        self._add(key, value, path, number, bare=not sep)

    # -- logic blocks --------------------------------------------------------

    def _add(self, key: str, value: str, path: str, number: int, bare: bool) -> None:
        if key in END_KEYS:
            self._block, self._failed = None, False
            return
        if key == "else":
            self._block = _Block("else", value, "%s:%d" % (path, number), "else")
            return
        block = self._block
        if block is None:
            self._direct(key, value, path, number, bare)
            return
        for k, v in self._through(block, key, value):
            self._direct(k, v, path, number, bare)

    def _through(self, block: _Block, key: str, value: str) -> list[tuple[str, str]]:
        """The (key, value) pairs one line of a block adds (none when the test fails)."""
        if block.kind == "else":
            return [(key, value)] if self._failed else []
        if block.kind in _FOR:
            return [(key, value.replace("%(_)", item)) for item in block.items]
        passed, data = self._test(block)
        self._failed = not passed
        return [(key, value.replace("%(_)", data))] if passed else []

    def _test(self, block: _Block) -> tuple[bool, str]:
        """uWSGI's uwsgi_logic_opt_* functions: (passed, value for %(_))."""
        negate = block.kind.startswith("!")
        kind = block.kind.lstrip("!")
        arg = block.arg
        if kind in ("env", "opt"):
            name, eq, expected = arg.partition("=")
            if kind == "env":
                found = self.environ.get(name)
            else:
                self.referenced.add(name)
                found = self._option_value(name)
            if not negate:
                ok = found is not None and (not eq or found == expected)
            else:
                ok = found is None or (bool(eq) and found != expected)
            return ok, found or ""
        if kind == "exists":
            ok = os.access(arg, os.R_OK)
        elif kind == "file":
            ok = os.path.isfile(arg)
        elif kind == "dir":
            ok = os.path.isdir(arg)
        elif kind == "reload":
            ok = False  # configuration is read at start-up
        elif kind == "hostname":
            ok = arg == self._hostname
        else:  # plugin: uwsgigw is the Python plugin
            ok = arg.startswith("python")
        return ok != negate, arg

    def _option_value(self, name: str) -> str | None:
        for entry in self.entries:
            if entry.key == name:
                return entry.value
        return self._placeholders.get(name)

    def _open(self, key: str, value: str, where: str) -> None:
        block = _Block(key, value, where, _IF.get(key, key))
        if key == "for":
            block.items = list(ini_expand.split_words(value))
        elif key == "for-glob":
            block.items = sorted(p + "/" if os.path.isdir(p) and not p.endswith("/") else p
                                 for p in glob.glob(value)) or [value]
        elif key == "for-times":
            digits = re.match(r"\s*[0-9]*", value).group().strip()
            block.items = [str(i) for i in range(1, int(digits or 0) + 1)]
        elif key == "for-readline":
            try:
                with open(value, encoding="utf-8", errors="surrogateescape") as f:
                    block.items = [line.rstrip("\r\n") for line in f]
            except OSError as exc:
                self.warnings.append("%s: for-readline %s: %s" % (where, value, exc.strerror))
        self._block = block

    # -- entries -------------------------------------------------------------

    def _direct(self, key: str, value: str, path: str, number: int, bare: bool) -> None:
        where = "%s:%d" % (path, number)
        if key in _IF or key in _FOR:
            if self._block is not None and self._block.kind != "else":
                self.warnings.append(
                    "%s: %s inside the %s block of %s: uWSGI blocks do not nest, "
                    "this one replaces it" % (where, key, self._block.opener,
                                              self._block.origin))
            self._open(key, value, where)
            return
        if key in INCLUDE_KEYS:
            if split_spec(value)[0].endswith((".yml", ".yaml", ".json", ".js", ".xml")):
                self.warnings.append("%s: %s = %s: uwsgigw reads INI files only; convert it "
                                     "to INI; ignored" % (where, key, value))
                return
            saved = self._block
            self._block = None
            try:
                self._read_spec(value, where, top=False)
            finally:
                self._block = saved
            return
        if key in PLACEHOLDER_KEYS or key == "set":
            name, eq, val = value.partition("=")
            if not eq or not name.strip():
                self.warnings.append("%s: %s = %s: expected NAME=VALUE; ignored"
                                     % (where, key, value))
                return
            self.entries.append(Entry(name.strip(), val.strip(), path, number,
                                      placeholder=key != "set"))
            return
        self.entries.append(Entry(key, value, path, number, bare=bare))

    # -- expansion -----------------------------------------------------------

    def finish(self) -> IniResult:
        """Run uWSGI's three passes over every value: $(..), then @(..), then %(..)."""
        env = ini_expand.env_hook(self.environ)
        for entry in self.entries:
            entry.value, entry.unset_env = ini_expand.expand(entry.value, "$", env)
        for entry in self.entries:
            def warn(message: str, entry: Entry = entry) -> None:
                self.warnings.append("%s: %s" % (entry.origin, message))
            entry.value, _ = ini_expand.expand(entry.value, "@", ini_expand.file_hook(warn))
        first: dict[str, Entry] = {}
        for entry in self.entries:
            first.setdefault(entry.key, entry)
        resolving: list[str] = []

        def lookup(name: str) -> str | None:
            self.referenced.add(name)
            target = first.get(name)
            if target is None:
                return self._placeholders.get(name)
            if name in resolving:
                raise ini_expand.ExpansionLoop(name)
            resolving.append(name)
            try:
                target.value, target.unresolved = ini_expand.expand(
                    target.value, "%", lambda k: ini_expand.placeholder(k, lookup))
            finally:
                resolving.pop()
            return target.value

        for entry in self.entries:
            try:
                entry.value, entry.unresolved = ini_expand.expand(
                    entry.value, "%", lambda k: ini_expand.placeholder(k, lookup))
            except ini_expand.ExpansionLoop as exc:
                raise IniError("%s: %s = %s: %%(%s) refers to itself"
                               % (entry.origin, entry.key, entry.value, exc)) from None
            # A $(VAR) left in the value, also one that came in through a
            # %(key), means VAR is unset: config.py leaves such lines out.
            entry.unset_env = [name for name in _ENV_REF.findall(entry.value)
                               if env(name) is None]
        return IniResult(self.entries, self.warnings, self.missing, self.referenced,
                         self.files)


def read(specs: list[str], environ: Mapping[str, str], *,
         placeholders: Mapping[str, str] = {}, origin: str = "command line") -> IniResult:
    """Read the --ini files in order and expand them (the public entry point)."""
    reader = Reader(environ, placeholders=placeholders)
    for spec in specs:
        reader.load(spec, origin)
    return reader.finish()
