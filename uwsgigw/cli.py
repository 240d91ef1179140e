"""The ``uwsgigw`` command line, generated from the option table.

uWSGI-style command lines work as they are: ``--socket /tmp/x.sock --module
app:application --processes 2 --master``, ``-s :8000 -w app -p 2 -M``, a bare
``--master``, ``uwsgigw site.ini`` for ``--ini site.ini``. Every option's
long name, uWSGI aliases and short flag come from ``options.OPTIONS``;
uWSGI options uwsgigw does not support are accepted as hidden flags that only
produce the same warning as in an INI file; anything else gets "not an
option" with the closest name and exit code 78.

Besides the options: ``--check`` (predict start-up, exit 0 or 1; preflight.py),
``--print-config``, ``--version``, ``--reload PIDFILE`` (SIGHUP), ``--stop
PIDFILE`` (SIGTERM), ``--chain-reload PIDFILE`` (SIGURG: process/chain.py says
why that signal).
``uwsgigw healthcheck ADDRESS [PATH] ...`` is the client mode (healthcheck.py).
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, NoReturn

import click

from . import __version__, exitcodes, log
from .config.options import BOOL, BY_NAME, MAPPED, OPTIONS, Option
from .config.settings import (
    Config,
    ConfigError,
    build,
    describe_unknown,
    describe_unsupported,
)
from .config.uwsgi_compat import UNSUPPORTED

_OWN_FLAGS = {"check", "print-config", "version", "reload", "stop", "chain-reload", "help"}
_EPILOG = ("Every option can also be set in the [uwsgi] section of an INI file "
           "(name = value) or as UWSGIGW_<NAME> in the environment; the command line "
           "wins over both. uWSGI options uwsgigw does not support are accepted with "
           "a warning that says what to do instead. See 'Settings reference' in "
           "README.md.")


@dataclass
class Invocation:
    """A parsed command line: option values (raw) and the command's own flags."""

    values: dict[str, Any]
    check: bool = False
    print_config: bool = False
    version: bool = False
    reload: str | None = None
    stop: str | None = None
    chain_reload: str | None = None
    warnings: list[str] = field(default_factory=list)
    listeners: list[str] = field(default_factory=list)


class CliError(click.ClickException):
    """A command-line mistake reported like a configuration error (exit 78)."""

    exit_code = exitcodes.CONFIG_ERROR

    def show(self, file: Any = None) -> None:
        click.echo("uwsgigw: error: %s" % self.format_message(), err=True)


class UwsgiCommand(click.Command):
    """click, but unknown flags get uWSGI-aware messages instead of click's,
    and ``uwsgigw healthcheck ...`` runs the client mode (healthcheck.py)."""

    def main(self, args=None, prog_name=None, **extra):
        log.ensure_std_fds()  # first: started with fds 0-2 closed, files would take them
        argv = list(sys.argv[1:] if args is None else args)
        if argv[:1] == ["healthcheck"]:
            from .healthcheck import command
            return command.main(argv[1:], prog_name="%s healthcheck" % (
                prog_name or "uwsgigw"), **extra)
        return super().main(argv, prog_name=prog_name, **extra)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            name = exc.option_name.split("=", 1)[0]
            raise CliError("command line: %s; see uwsgigw --help"
                           % describe_unknown(name.lstrip("-"))) from None


def _help(opt: Option) -> str:
    text = opt.help
    if opt.status == MAPPED:
        text += " (accepted: %s)" % opt.maps_to
    default = opt.default
    if not opt.multi and default not in (None, False):
        shown = "true" if default is True else (
            str(int(default)) if isinstance(default, float) else str(default))
        text += " [default: %s]" % shown
    return text + " [env: %s]" % opt.env


def _option(opt: Option) -> click.Option:
    decls = ["--" + n for n in opt.names] + (["-" + opt.short] if opt.short else [])
    if opt.kind == BOOL:
        # Tri-state: None when absent, so INI and environment values stand.
        decls[0] = "--%s/--no-%s" % (opt.name, opt.name)
        return click.Option(decls + [opt.attr], default=None, help=_help(opt))
    kwargs: dict[str, Any] = {"default": None, "metavar": opt.metavar, "help": _help(opt)}
    if opt.multi:
        kwargs.update(multiple=True, default=())
    if opt.flag_value is not None:
        kwargs.update(is_flag=False, flag_value=opt.flag_value)
    return click.Option(decls + [opt.attr], **kwargs)


def _unsupported_options(taken: set[str]) -> list[click.Option]:
    params = []
    for name, info in sorted(UNSUPPORTED.items()):
        if name in taken:
            continue
        attr = "x_" + name.replace("-", "_")
        if info.takes_value:
            params.append(click.Option(["--" + name, attr], multiple=True, hidden=True))
        else:
            params.append(click.Option(["--" + name, attr], is_flag=True, hidden=True,
                                       default=False))
    return params


def build_command() -> click.Command:
    params: list[click.Parameter] = [_option(o) for o in OPTIONS if o.cli]
    params += [
        click.Option(["--check"], is_flag=True, help="predict start-up without serving: "
                     "exit 1 with the errors on stderr if it would stop (also for this "
                     "machine: sockets, paths, users, the app's import), else 0; "
                     "warnings on stdout"),
        click.Option(["--print-config"], is_flag=True, help="print the effective "
                     "configuration as INI, with where each value came from, and exit"),
        click.Option(["--version"], is_flag=True, help="print the version, the decoder "
                     "and the Python version, and exit"),
        click.Option(["--reload"], metavar="PIDFILE", help="gracefully reload the "
                     "uwsgigw whose master pid is in PIDFILE (SIGHUP), and exit"),
        click.Option(["--stop"], metavar="PIDFILE", help="gracefully stop the uwsgigw "
                     "whose master pid is in PIDFILE (SIGTERM), and exit"),
        click.Option(["--chain-reload"], metavar="PIDFILE", help="chain reload the "
                     "uwsgigw whose master pid is in PIDFILE (SIGURG): its workers are "
                     "replaced one at a time, each old one stopping once its replacement "
                     "accepts (they import the app afresh only with lazy-apps; --reload "
                     "reloads the code), and exit"),
        click.Argument(["configs"], nargs=-1, metavar="[FILE.ini]..."),
    ]
    taken = set(BY_NAME) | _OWN_FLAGS
    params += _unsupported_options(taken)
    return UwsgiCommand(
        "uwsgigw", params=params, callback=_run, epilog=_EPILOG,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
        help="Run a WSGI app behind nginx's uwsgi_pass, configured like uWSGI. "
             "'uwsgigw healthcheck ADDRESS [PATH]' sends one request to a uwsgi or HTTP "
             "socket (see 'uwsgigw healthcheck --help').")


def invocation_from_params(params: dict[str, Any]) -> Invocation:
    values = {o.attr: params.get(o.attr) for o in OPTIONS if o.cli}
    configs = list(params.get("configs") or ())
    for item in configs:
        if not item.split(":", 1)[0].endswith(".ini"):
            raise CliError("command line: unexpected argument %r (uwsgigw reads INI "
                           "files: --ini FILE)" % item)
    if configs:
        values["ini"] = tuple(values.get("ini") or ()) + tuple(configs)
    inv = Invocation(values, check=bool(params.get("check")),
                     print_config=bool(params.get("print_config")),
                     version=bool(params.get("version")), reload=params.get("reload"),
                     stop=params.get("stop"), chain_reload=params.get("chain_reload"))
    for name, info in sorted(UNSUPPORTED.items()):
        given = params.get("x_" + name.replace("-", "_"))
        if not given:
            continue
        inv.warnings.append("command line (--%s): %s" % (name, describe_unsupported(name)))
        if info.listener:
            items = given if isinstance(given, tuple) else ("",)
            inv.listeners += ["--%s %s" % (name, v) for v in items]
    return inv


def parse_argv(argv: list[str]) -> Invocation:
    """Parse a command line without running it (``load`` uses this)."""
    try:
        ctx = main.make_context("uwsgigw", list(argv))
        return invocation_from_params(ctx.params)
    except CliError as exc:
        raise ConfigError(exc.format_message()) from None
    except click.ClickException as exc:
        raise ConfigError("command line: %s" % exc.format_message()) from None


def load(argv: list[str], environ: Mapping[str, str]) -> Config:
    """Parse a uwsgigw command line (as ``uwsgigw`` would; ``argv`` without the
    program name, e.g. ``["--ini", "site.ini"]``) and build its Config.

    Raises ConfigError for anything that stops start-up.
    """
    invocation = parse_argv(list(argv))
    return build(invocation.values, environ, check=invocation.check,
                 cli_warnings=invocation.warnings, cli_listeners=invocation.listeners)


# -- running -------------------------------------------------------------------

def _fail(messages: list[str], code: int) -> NoReturn:
    for message in messages:
        click.echo("uwsgigw: error: %s" % message, err=True)
    sys.exit(code)


def signal_pidfile(path: str, signum: int) -> int:
    """--reload/--stop/--chain-reload: send ``signum`` to the pid in ``path``;
    -> exit code."""
    name = signal.Signals(signum).name
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError as exc:
        _fail(["cannot read pidfile %s: %s" % (path, exc.strerror)], exitcodes.RUNTIME_ERROR)
    if not text.isdigit() or int(text) <= 1:
        _fail(["pidfile %s does not hold a pid (%r)" % (path, text[:40])],
              exitcodes.RUNTIME_ERROR)
    pid = int(text)
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        _fail(["no process %d (stale pidfile %s?)" % (pid, path)], exitcodes.RUNTIME_ERROR)
    except PermissionError:
        _fail(["not allowed to signal process %d (from %s); run as its user or root"
               % (pid, path)], exitcodes.RUNTIME_ERROR)
    click.echo("sent %s to uwsgigw master %d" % (name, pid))
    return exitcodes.OK


def version_line(decoder: str) -> str:
    from .backend import select  # written alongside; imported only when asked
    return "uwsgigw %s (decoder: %s, Python %s)" % (
        __version__, select(decoder).name, ".".join(map(str, sys.version_info[:3])))


def _version(inv: Invocation) -> NoReturn:
    choice = inv.values.get("decoder") or os.environ.get("UWSGIGW_DECODER") or "auto"
    if choice not in BY_NAME["decoder"].choices:
        _fail(["decoder = %r: expected one of %s"
               % (choice, ", ".join(BY_NAME["decoder"].choices))], exitcodes.CONFIG_ERROR)
    try:
        click.echo(version_line(choice))
    except Exception as exc:  # DecoderUnavailable: say why, like start-up does
        _fail([str(exc)], exitcodes.CONFIG_ERROR)
    sys.exit(exitcodes.OK)


def _not_usable(warnings: list[str], errors: list[str]) -> NoReturn:
    """--check found what would stop start-up: warnings on stdout, errors on stderr."""
    for message in warnings:
        click.echo("warning: " + message)
    click.echo("configuration NOT usable (%d error%s, on stderr)"
               % (len(errors), "" if len(errors) == 1 else "s"))
    _fail(errors, exitcodes.RUNTIME_ERROR)


def _report_check(cfg: Config) -> NoReturn:
    """--check: predict start-up on this machine (preflight.py), exit 0 or 1."""
    from .preflight import predict
    prediction = predict(cfg, os.environ)
    warnings = cfg.warnings + prediction.warnings
    errors = cfg.stoppers + prediction.errors
    if errors:
        _not_usable(warnings, errors)
    for message in warnings:
        click.echo("warning: " + message)
    for message in cfg.notes:
        click.echo("note: " + message)
    what = ", ".join(cfg.ini_files) or "command line"
    click.echo("%s: OK for uwsgigw (%d warning%s)" % (
        what, len(warnings), "" if len(warnings) == 1 else "s"))
    sys.exit(exitcodes.OK)


def _run(**params: Any) -> None:
    inv = invocation_from_params(params)
    if inv.reload or inv.stop or inv.chain_reload:
        sys.exit(signal_pidfile(inv.reload or inv.stop or inv.chain_reload,
                                signal.SIGHUP if inv.reload else signal.SIGTERM if inv.stop
                                else signal.SIGURG))
    if inv.version:
        _version(inv)
    try:
        cfg = build(inv.values, os.environ, check=inv.check, cli_warnings=inv.warnings,
                    cli_listeners=inv.listeners)
    except ConfigError as exc:
        if inv.check:
            _not_usable(exc.warnings, exc.messages)
        _fail(exc.messages, exc.exit_code)
    if inv.check:
        _report_check(cfg)
    if inv.print_config:
        for message in cfg.warnings:
            click.echo("warning: " + message, err=True)
        click.echo(cfg.format(), nl=False)
        sys.exit(exitcodes.OK)
    from .server import serve  # the server is heavy and not needed for the above
    sys.exit(serve(cfg))


main = build_command()
