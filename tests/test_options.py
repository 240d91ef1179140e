"""The option table: declarations, parsers, and the generated settings reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from uwsgigw.config import options, optypes
from uwsgigw.config.options import BY_NAME, MAPPED, OPTIONS, IMPLEMENTED
from uwsgigw.config.uwsgi_compat import LISTENERS, UNSUPPORTED

README = Path(__file__).resolve().parent.parent / "README.md"


def parse(name: str, text: str):
    warnings: list[str] = []
    return BY_NAME[name].parse(text, warnings.append), warnings


# -- declarations ----------------------------------------------------------------

def test_every_option_is_fully_declared():
    for opt in OPTIONS:
        assert opt.help and opt.group and opt.kind in options._PARSERS, opt.name
        assert opt.status in (IMPLEMENTED, MAPPED)
        assert (opt.status == MAPPED) == bool(opt.maps_to), opt.name
        assert opt.env == "UWSGIGW_" + opt.attr.upper()


def test_names_are_unique_across_options_aliases_and_unsupported():
    names = [n for o in OPTIONS for n in o.names]
    assert len(names) == len(set(names))
    assert not set(names) & set(UNSUPPORTED)
    shorts = [o.short for o in OPTIONS if o.short]
    assert len(shorts) == len(set(shorts)) and "h" not in shorts


@pytest.mark.parametrize("name, attr, default", [
    ("socket", "socket", []), ("module", "module", None), ("callable", "callable", "application"),
    ("wsgi-file", "wsgi_file", None), ("chdir", "chdir", None), ("home", "home", None),
    ("pythonpath", "pythonpath", []), ("env", "env", []), ("mount", "mount", []),
    ("manage-script-name", "manage_script_name", False), ("processes", "processes", 1),
    ("master", "master", False), ("threads", "threads", 1), ("enable-threads", "enable_threads", False),
    ("lazy-apps", "lazy_apps", False), ("need-app", "need_app", True),
    ("buffer-size", "buffer_size", 4096), ("post-buffering", "post_buffering", 0),
    ("post-buffering-bufsize", "post_buffering_bufsize", 8192),
    ("socket-timeout", "socket_timeout", 4.0), ("limit-post", "limit_post", 0),
    ("listen", "listen", 1024), ("chmod-socket", "chmod_socket", "660"),
    ("chown-socket", "chown_socket", None), ("uid", "uid", None), ("gid", "gid", None),
    ("pidfile", "pidfile", None), ("vacuum", "vacuum", False), ("daemonize", "daemonize", None),
    ("logto", "logto", None), ("disable-logging", "disable_logging", False),
    ("log-format", "log_format", None), ("log-4xx", "log_4xx", False), ("log-5xx", "log_5xx", False),
    ("log-slow", "log_slow", 0), ("memory-report", "memory_report", False),
    ("harakiri", "harakiri", 0), ("harakiri-verbose", "harakiri_verbose", False),
    ("max-requests", "max_requests", 0), ("max-requests-delta", "max_requests_delta", 0),
    ("reload-on-rss", "reload_on_rss", 0), ("reload-on-as", "reload_on_as", 0),
    ("worker-reload-mercy", "worker_reload_mercy", 60), ("reload-mercy", "reload_mercy", 60),
    ("die-on-term", "die_on_term", False), ("single-interpreter", "single_interpreter", False),
    ("thunder-lock", "thunder_lock", False), ("stats", "stats", None), ("decoder", "decoder", "auto"),
    ("http-socket", "http_socket", []), ("http-keepalive", "http_keepalive", True),
    ("http-keepalive-timeout", "http_keepalive_timeout", 75.0),
    ("http-headers-timeout", "http_headers_timeout", 60.0),
    ("forwarded-allow-ips", "forwarded_allow_ips", ["127.0.0.1/32", "::1/128"]),
])
def test_contract_options(name, attr, default):
    opt = BY_NAME[name]
    assert opt.attr == attr and opt.default == default


@pytest.mark.parametrize("alias, name", [
    ("uwsgi-socket", "socket"), ("wsgi", "module"), ("file", "wsgi-file"),
    ("virtualenv", "home"), ("venv", "home"), ("workers", "processes"), ("logformat", "log-format"),
    ("http", "http-socket"), ("http11-socket", "http-socket"), ("http-timeout", "socket-timeout"),
    ("http-workers", "http-processes"),
])
def test_uwsgi_aliases(alias, name):
    assert BY_NAME[alias] is BY_NAME[name]


@pytest.mark.parametrize("short, name", [
    ("s", "socket"), ("w", "module"), ("p", "processes"), ("M", "master"), ("H", "home"),
    ("b", "buffer-size"), ("z", "socket-timeout"), ("l", "listen"),
])
def test_uwsgi_short_flags(short, name):
    assert BY_NAME[name].short == short


def test_mapped_options_say_what_they_map_to():
    assert BY_NAME["thunder-lock"].maps_to == "the kernel already wakes one worker per connection"
    for name in ("enable-threads", "single-interpreter", "die-on-term", "http-auto-chunked",
                 "http-chunked-input", "http-manage-expect", "http-raw-body", "http-processes"):
        assert BY_NAME[name].status == MAPPED
    assert "does not expose raw bodies" in BY_NAME["http-raw-body"].maps_to
    assert "runs in the workers" in BY_NAME["http-processes"].maps_to


@pytest.mark.parametrize("name, advice", [
    ("https", "use socket = ADDRESS here and uwsgi_pass ADDRESS in nginx"),
    ("https-socket", "http-socket = ADDRESS and proxy_pass"),
    ("check-static-docroot", "serve these from nginx with a location block"),
    ("attach-daemon", "run it as its own systemd unit"),
    ("cron", "systemd timer"), ("touch-reload", "SIGHUP"),
])
def test_unsupported_options_say_what_to_do_instead(name, advice):
    assert advice in UNSUPPORTED[name].advice


def test_listeners_and_flags():
    assert {"https", "https-socket", "fastcgi-socket"} <= LISTENERS
    assert not {"http", "http-socket", "http11-socket"} & LISTENERS  # options now
    assert UNSUPPORTED["check-static-docroot"].takes_value is False
    assert UNSUPPORTED["collect-header"].takes_value is True


def test_every_corpus_key_in_the_uwsgi_source_is_known():
    # The keys OPTIONS.md marks "yes" (in uWSGI's option tables): each one is
    # either an option or a known unsupported one, never "unknown".
    corpus_yes = """master chdir processes module socket threads wsgi-file uid vacuum
    enable-threads gid chmod-socket http max-requests buffer-size static-map die-on-term
    pidfile env daemonize disable-logging harakiri http-socket workers auto-procname
    callable lazy-apps post-buffering thunder-lock attach-daemon disable-write-exception
    log-5xx logto need-app single-interpreter virtualenv plugin pythonpath ignore-sigpipe
    ignore-write-errors offload-threads socket-timeout worker-reload-mercy logger log-route
    home http-timeout log-master plugins reload-on-rss static-gzip-all stats strict
    log-encoder add-header cheaper chown-socket hook-master-start listen log-4xx
    log-backupname log-date log-format log-maxsize manage-script-name max-worker-lifetime
    memory-report procname-prefix-spaced touch-reload uwsgi-socket unique-cron
    log-req-encoder cheaper-initial close-on-exec cron fs-reload gevent
    gevent-early-monkey-patch harakiri-verbose honour-stdin hook-pre-app
    http-enable-proxy-protocol http-keepalive http-websockets http11-socket import ksm
    logformat-strftime logger-req logto2 max-fd mount no-orphans no-site paste
    paste-logger procname-prefix protocol py-autoreload reload-mercy reload-on-as
    req-logger safe-pidfile static-expires static-expires-type-mtime static-gzip-dir
    stats-http subscribe-to umask""".split()
    missing = [k for k in corpus_yes if k not in BY_NAME and k not in UNSUPPORTED]
    assert not missing


# -- parsers ---------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("true", True), ("True", True), ("1", True), ("", True), ("yes", True), ("anything", True),
    ("false", False), ("FALSE", False), ("off", False), ("no", False), ("0", False),
])
def test_booleans(text, value):
    assert optypes.parse_bool(text) is value


def test_integers():
    assert parse("processes", " 4 ") == (4, [])
    with pytest.raises(optypes.BadValue, match="a whole number, e.g. 4"):
        parse("processes", "two")
    with pytest.raises(optypes.BadValue, match="at least 1"):
        parse("processes", "0")
    with pytest.raises(optypes.BadValue):
        parse("harakiri", "-1")


def test_a_boolean_word_for_a_number_is_what_uwsgi_reads_with_a_warning():
    value, warnings = parse("post-buffering", "true")
    assert value == 0
    assert warnings == ["'true' is not a number; uWSGI reads it as 0, and so does uwsgigw "
                        "(write a size in bytes, e.g. 8192)"]


def test_sizes_have_no_suffixes_like_uwsgi():
    assert parse("post-buffering", "65536") == (65536, [])
    with pytest.raises(optypes.BadValue, match="no k/m/g suffixes"):
        parse("post-buffering", "64k")
    with pytest.raises(optypes.BadValue, match="no k/m/g suffixes"):
        parse("limit-post", "10M")


def test_buffer_size_is_clamped_to_the_16_bit_field():
    assert parse("buffer-size", "65536") == (65535, [])
    assert parse("buffer-size", "65535") == (65535, [])
    assert parse("buffer-size", "1") == (1, [])
    for bad in ("65537", "100000", "0", "-5", "8k"):
        with pytest.raises(optypes.BadValue):
            parse("buffer-size", bad)


def test_socket_timeout_is_seconds():
    assert parse("socket-timeout", "4") == (4.0, [])
    assert parse("socket-timeout", "0.5") == (0.5, [])
    for bad in ("0", "-1", "soon"):
        with pytest.raises(optypes.BadValue):
            parse("socket-timeout", bad)


def test_chmod_socket():
    assert parse("chmod-socket", "664") == ("664", [])
    assert parse("chmod-socket", "0660") == ("660", [])
    assert parse("chmod-socket", "") == ("666", [])  # bare chmod-socket, as in uWSGI
    for bad in ("999", "66", "rw-rw----"):
        with pytest.raises(optypes.BadValue, match="three octal digits"):
            parse("chmod-socket", bad)


@pytest.mark.parametrize("text", ["/run/x.sock", "x.sock", ":8000", "127.0.0.1:3031",
                                  "0.0.0.0:8000", "[::1]:8000", "@abstract", "localhost:80"])
def test_socket_spellings(text):
    assert parse("socket", text) == (text, [])


def test_bad_sockets():
    for bad in ("127.0.0.1:http", ":70000", "", "[::1:80"):
        with pytest.raises(optypes.BadValue):
            parse("socket", bad)
    value, warnings = parse("socket", "127.0.0.1:0")
    assert "random port" in warnings[0]


def test_http_socket_spellings_are_the_socket_ones():
    for text in ("/run/x.sock", ":8000", "127.0.0.1:8000", "[::1]:8000", "@abstract"):
        assert parse("http-socket", text) == (text, [])
    for bad in ("127.0.0.1:http", ":70000", "", "[::1:80"):
        with pytest.raises(optypes.BadValue):
            parse("http-socket", bad)
    assert BY_NAME["http-socket"].multi and BY_NAME["http-socket"].check == "socket"


def test_http_keepalive_is_uwsgis_number_or_boolean():
    for text, on in (("1", True), ("100", True), ("true", True), ("", True),
                     ("0", False), ("off", False), ("false", False)):
        assert parse("http-keepalive", text) == (on, []), text


def test_http_timeouts_are_seconds():
    assert parse("http-keepalive-timeout", "5") == (5.0, [])
    assert parse("http-headers-timeout", "0.5") == (0.5, [])
    for name in ("http-keepalive-timeout", "http-headers-timeout"):
        for bad in ("0", "-1", "soon"):
            with pytest.raises(optypes.BadValue):
                parse(name, bad)


def test_forwarded_allow_ips_are_networks_like_uwsgi_allow_from():
    assert parse("forwarded-allow-ips", "10.0.0.0/8, ::1") == ("10.0.0.0/8, ::1/128", [])
    assert parse("forwarded-allow-ips", "192.168.1.5") == ("192.168.1.5/32", [])
    for bad in ("*", "10.1.2.3/8", "nginx", ""):
        with pytest.raises(optypes.BadValue, match="IP networks"):
            parse("forwarded-allow-ips", bad)
    for network in BY_NAME["forwarded-allow-ips"].default:  # the default is valid too
        assert parse("forwarded-allow-ips", network) == (network, [])


def test_env_mount_decoder_protocol():
    assert parse("env", "A=b=c") == ("A=b=c", [])
    with pytest.raises(optypes.BadValue, match="KEY=VALUE"):
        parse("env", "JUSTKEY")
    assert parse("mount", "/api=wsgi:app") == ("/api=wsgi:app", [])
    with pytest.raises(optypes.BadValue, match="/PREFIX="):
        parse("mount", "api=wsgi:app")
    assert parse("decoder", "C") == ("c", [])
    with pytest.raises(optypes.BadValue, match="one of auto, c, python"):
        parse("decoder", "rust")
    with pytest.raises(optypes.BadValue, match="one of uwsgi"):
        parse("protocol", "http")


def test_plugins_other_than_python_warn():
    assert parse("plugin", "python3") == ("python3", [])
    _, warnings = parse("plugin", "router_static")
    assert "not available" in warnings[0]


# -- settings reference -------------------------------------------------------------

def test_readme_block_is_generated_from_the_table():
    text = README.read_text(encoding="utf-8")
    block = text.split(options.README_START, 1)[1].split(options.README_END, 1)[0]
    assert block.strip() == options.settings_markdown().strip(), (
        "README settings block is stale: run python -m uwsgigw.config.options --write README.md")


def test_settings_reference_lists_every_option_and_unsupported_name():
    text = options.settings_markdown()
    for opt in OPTIONS:
        assert "| `%s` |" % opt.name in text
    for name in UNSUPPORTED:
        assert "`%s`" % name in text


def test_options_module_prints_and_rewrites(tmp_path, capsys):
    assert options.main([]) == 0
    assert capsys.readouterr().out == options.settings_markdown()
    readme = tmp_path / "README.md"
    readme.write_text("intro\n%s\nSTALE-BLOCK\n%s\nend\n" % (options.README_START, options.README_END))
    assert options.main(["--write", str(readme)]) == 0
    new = readme.read_text()
    assert new.startswith("intro\n") and new.endswith(options.README_END + "\nend\n")
    assert options.settings_markdown() in new and "STALE-BLOCK" not in new
