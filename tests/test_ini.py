"""The INI reader: every uWSGI rule the issue lists, one test (or a few) each."""

from __future__ import annotations

import os
import socket

import pytest

from uwsgigw.config import ini, ini_expand


def read(tmp_path, text: str, environ=None, name: str = "app.ini", section: str = "",
         placeholders=None) -> ini.IniResult:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    spec = str(path) + (":" + section if section else "")
    return ini.read([spec], environ or {}, placeholders=placeholders or {})


def pairs(result: ini.IniResult) -> list[tuple[str, str]]:
    return [(e.key, e.value) for e in result.entries]


def value(result: ini.IniResult, key: str) -> str:
    return dict(pairs(result))[key]


# -- sections, lines, comments -------------------------------------------------------

def test_only_the_uwsgi_section_is_read(tmp_path):
    res = read(tmp_path, "[app:main]\nuse = egg:x\n[uwsgi]\nmaster = true\n[other]\nmaster = false\n")
    assert pairs(res) == [("master", "true")]


def test_file_colon_section(tmp_path):
    res = read(tmp_path, "[uwsgi]\nprocesses = 1\n[prod]\nprocesses = 8\n", section="prod")
    assert pairs(res) == [("processes", "8")]


def test_missing_section_is_a_warning(tmp_path):
    res = read(tmp_path, "[app]\nx = 1\n")
    assert pairs(res) == [] and "there is no [uwsgi] section" in res.warnings[0]


def test_comment_lines_and_a_comment_before_the_first_section(tmp_path):
    text = "; header\n# another\n[uwsgi]\n  ; indented comment\n#master = true\nthreads = 2\n"
    assert pairs(read(tmp_path, text)) == [("threads", "2")]


def test_split_at_the_first_equals(tmp_path):
    res = read(tmp_path, "[uwsgi]\nenv = DJANGO_SETTINGS_MODULE=app.settings\n"
                         "mount = /api=wsgi:app\nkey=value\n")
    assert pairs(res) == [("env", "DJANGO_SETTINGS_MODULE=app.settings"),
                          ("mount", "/api=wsgi:app"), ("key", "value")]


def test_inline_comments_after_a_blank_are_stripped(tmp_path):
    res = read(tmp_path, "[uwsgi]\nuid=www-data # Ubuntu user\nmax-requests = 1000   ; recycle\n"
                         "processes=2 #中文注释\n")
    assert pairs(res) == [("uid", "www-data"), ("max-requests", "1000"), ("processes", "2")]


def test_hash_and_semicolon_without_a_blank_before_them_stay(tmp_path):
    res = read(tmp_path, "[uwsgi]\nstats = http://example.com/#frag\nenv = A=b;c\nenv = B=#x\n")
    assert pairs(res) == [("stats", "http://example.com/#frag"), ("env", "A=b;c"),
                          ("env", "B=#x")]


def test_key_without_equals_is_an_empty_value(tmp_path):
    res = read(tmp_path, "[uwsgi]\nmaster\ndie-on-term   # comment\n")
    assert [(e.key, e.value, e.bare) for e in res.entries] == [
        ("master", "", True), ("die-on-term", "", True)]


def test_crlf_and_no_final_newline(tmp_path):
    res = read(tmp_path, "#c\r\n[uwsgi]\r\nchdir=/srv/app\r\nthreads = 200\r\nmaster=true")
    assert pairs(res) == [("chdir", "/srv/app"), ("threads", "200"), ("master", "true")]


def test_unicode_blanks_count_as_spaces(tmp_path):
    # The seed file (copied from a web page) uses U+00A0 around "=" and "#".
    res = read(tmp_path, "[uwsgi]\nbase\u00a0=\u00a0/home/u\u00a0#\u00a0comment\n\u00a0\n"
                         "uid=www-data\u00a0#\u00a0x\n")
    assert pairs(res) == [("base", "/home/u"), ("uid", "www-data")]


def test_line_without_a_key_warns(tmp_path):
    res = read(tmp_path, "[uwsgi]\n= value\n")
    assert res.entries == [] and "without a key" in res.warnings[0]


# -- includes -----------------------------------------------------------------------

def test_ini_include_is_read_at_that_point(tmp_path):
    (tmp_path / "base.ini").write_text("[uwsgi]\nmaster = true\nprocesses = 4\n")
    res = read(tmp_path, "[uwsgi]\nsocket = :3031\nini = %dbase.ini\nsocket = :3032\n")
    assert pairs(res) == [("socket", ":3031"), ("master", "true"), ("processes", "4"),
                          ("socket", ":3032")]
    assert len(res.files) == 2


def test_ini_colon_section_reads_another_section_of_the_same_file(tmp_path):
    res = read(tmp_path, "[uwsgi]\nini = :base\nsocket = /tmp/s.sock\n[base]\nchdir = /seed\n"
                         "chmod-socket=666\n")
    assert pairs(res) == [("chdir", "/seed"), ("chmod-socket", "666"), ("socket", "/tmp/s.sock")]


def test_relative_include_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "extra.ini").write_text("[uwsgi]\nthreads = 3\n")
    monkeypatch.chdir(tmp_path)
    res = read(tmp_path, "[uwsgi]\nini = sub/extra.ini\n")
    assert pairs(res) == [("threads", "3")]


def test_missing_include_is_reported_not_raised(tmp_path):
    res = read(tmp_path, "[uwsgi]\nini = /nonexistent/x.ini\nmaster = true\n")
    assert pairs(res) == [("master", "true")]
    assert "app.ini:2: ini file /nonexistent/x.ini does not exist" in res.missing[0]


def test_missing_top_level_file_is_an_error(tmp_path):
    with pytest.raises(ini.IniError, match="ini file .*nope.ini does not exist"):
        ini.read([str(tmp_path / "nope.ini")], {})


def test_include_loop_is_an_error(tmp_path):
    with pytest.raises(ini.IniError, match="includes itself"):
        read(tmp_path, "[uwsgi]\nini = %p\n")


def test_urls_are_refused(tmp_path):
    with pytest.raises(ini.IniError, match="from disk only"):
        ini.read(["http://example.com/x.ini"], {})


# -- magic variables ------------------------------------------------------------------

def test_magic_variables(tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    text = ("[uwsgi]\nd = %d\nn = %n\np = %p\ns = %s\ne = %e\nc = %c\nx = %x\nh = %h\n"
            "k = %k\npct = 100%%\nzero = %0\n")
    res = read(sub, text, name="site.prod.ini")
    real = os.path.realpath(sub / "site.prod.ini")
    assert value(res, "d") == os.path.dirname(real) + "/"
    assert value(res, "n") == "site.prod"
    assert value(res, "p") == real
    assert value(res, "s") == "site.prod.ini"
    assert value(res, "e") == "ini"
    assert value(res, "c") == "conf"
    assert value(res, "x") == ""
    assert value(res, "h") == socket.gethostname()
    assert value(res, "k") == str(os.cpu_count())
    assert value(res, "pct") == "100%"
    assert value(res, "zero") == real.split("/")[1]


def test_magic_x_is_the_requested_section(tmp_path):
    res = read(tmp_path, "[uwsgi]\n[prod]\nname = %x\n", section="prod")
    assert value(res, "name") == "prod"


def test_unknown_magic_letter_is_replaced_by_nothing_with_a_warning(tmp_path):
    res = read(tmp_path, "[uwsgi]\nlog-format = %Y-%(addr)\n")
    assert value(res, "log-format") == "-%(addr)"
    assert "%Y is not a uWSGI magic variable" in res.warnings[0]


def test_escaped_percent_survives_for_strftime_values(tmp_path):
    res = read(tmp_path, "[uwsgi]\nlog-date = %%Y-%%m-%%d\n")
    assert value(res, "log-date") == "%Y-%m-%d"


# -- $(ENV), @(file), %(key) --------------------------------------------------------------

def test_env_expansion(tmp_path):
    res = read(tmp_path, "[uwsgi]\nhome = $(HOME)/venv\nworkers = $(NOPE)\n"
                         "a = $(NOPE:-4)\nb = $(EMPTY:-x)\nc = $(EMPTY-y)\n",
               environ={"HOME": "/home/u", "EMPTY": ""})
    assert pairs(res) == [("home", "/home/u/venv"), ("workers", "$(NOPE)"), ("a", "4"),
                          ("b", "x"), ("c", "")]
    assert res.entries[1].unset_env == ["NOPE"]


def test_file_expansion(tmp_path):
    (tmp_path / "name.txt").write_text("node7\n")
    res = read(tmp_path, "[uwsgi]\nprocname = @(%dname.txt)\nother = @(/nonexistent)\n")
    assert pairs(res) == [("procname", "node7"), ("other", "")]
    assert "cannot read the file" in res.warnings[0]


def test_references_to_user_defined_keys(tmp_path):
    text = ("[uwsgi]\nproject=mysite1\nbase = /home/user1\nchdir=%(base)/%(project)\n"
            "module=%(project).wsgi:application\nuid=www-data\nchown-socket=%(uid):www-data\n")
    res = read(tmp_path, text)
    assert value(res, "chdir") == "/home/user1/mysite1"
    assert value(res, "module") == "mysite1.wsgi:application"
    assert value(res, "chown-socket") == "www-data:www-data"
    assert {"base", "project", "uid"} <= res.referenced


def test_references_resolve_after_reading_so_forward_references_work(tmp_path):
    res = read(tmp_path, "[uwsgi]\nchdir = %(base)/app\nbase = /srv\n")
    assert value(res, "chdir") == "/srv/app"


def test_first_value_of_a_key_wins(tmp_path):
    res = read(tmp_path, "[uwsgi]\nsocket = :1\nsocket = :2\nx = %(socket)\n")
    assert value(res, "x") == ":1"


def test_nested_references(tmp_path):
    res = read(tmp_path, "[uwsgi]\nwww = %(home)/www\nhome = /home/u\nbase = %(www)/app\n")
    assert value(res, "base") == "/home/u/www/app"


def test_unresolved_references_are_left_as_written(tmp_path):
    res = read(tmp_path, "[uwsgi]\nlog-format = %(addr) %(method) by %(who)\nwho = me\n")
    assert value(res, "log-format") == "%(addr) %(method) by me"
    assert res.entries[0].unresolved == ["addr", "method"]


def test_self_reference_is_an_error(tmp_path):
    with pytest.raises(ini.IniError, match="refers to itself"):
        read(tmp_path, "[uwsgi]\na = %(b)\nb = %(a)\n")


def test_placeholders_from_the_command_line(tmp_path):
    res = read(tmp_path, "[uwsgi]\nchdir = /srv/%(app)\n", placeholders={"app": "shop"})
    assert value(res, "chdir") == "/srv/shop"


@pytest.mark.parametrize("expr, result", [
    ("%(foo + bar + 3)", "50"), ("%(foo + bar + 3 * 2)", "100"), ("%(foo ++)", "18"),
    ("%(foo --)", "16"), ("%(two nine ++)", "30"), ("%(foo / 0)", "0"), ("%(foo - 20)", "-3"),
    ("%(%k * 2)", str(2 * (os.cpu_count() or 1))), ("%(missing + 1)", "1"),
])
def test_placeholder_math_is_uwsgi_pipeline(tmp_path, expr, result):
    res = read(tmp_path, "[uwsgi]\nfoo = 17\nbar = 30\ntwo = 2\nnine = 9\nt = %s\n" % expr)
    assert value(res, "t") == result


# -- logic blocks --------------------------------------------------------------------------

def test_if_env_and_if_not_env(tmp_path):
    text = ("[uwsgi]\nif-env = PROCS\nprocesses = %(_)\nendif =\n"
            "if-not-env = PROCS\nprocesses = %(%k * 2)\nendif =\n"
            "if-env = MODE=prod\nmaster = true\nendif\n")
    assert pairs(read(tmp_path, text, {"PROCS": "3", "MODE": "dev"})) == [("processes", "3")]
    assert pairs(read(tmp_path, text, {})) == [("processes", str(2 * (os.cpu_count() or 1)))]
    assert ("master", "true") in pairs(read(tmp_path, text, {"MODE": "prod"}))


def test_if_opt_and_if_not_opt(tmp_path):
    text = ("[uwsgi]\nif-env = CI\nrunning-ci = %(_)\nendif =\nif-not-env = CI\n"
            "running-ci = none\nendif =\nif-not-opt = running-ci=true\nsafe = %(running-ci)\n"
            "endif =\nif-opt = running-ci\nseen = %(_)\nendif =\n")
    assert pairs(read(tmp_path, text, {})) == [
        ("running-ci", "none"), ("safe", "none"), ("seen", "none")]
    assert pairs(read(tmp_path, text, {"CI": "true"})) == [
        ("running-ci", "true"), ("seen", "true")]
    assert "running-ci" in read(tmp_path, text, {}).referenced


def test_if_tests_run_for_every_line_like_uwsgi(tmp_path):
    # the second line fails: foo is set by then
    res = read(tmp_path, "[uwsgi]\nif-not-opt = foo\nfoo = 1\nbar = 2\nendif\n")
    assert pairs(res) == [("foo", "1")]


def test_if_exists_file_dir(tmp_path):
    (tmp_path / "there").write_text("x")
    text = ("[uwsgi]\nif-exists = %dthere\na = %(_)\nendif\nif-not-exists = %dnot-there\nb = 1\n"
            "endif\nif-file = %dthere\nc = 1\nendif\nif-dir = %dthere\nd = 1\nendif\n"
            "if-not-dir = %dthere\ne = 1\nendif\n")
    res = read(tmp_path, text)
    assert pairs(res) == [("a", str(tmp_path / "there")), ("b", "1"), ("c", "1"), ("e", "1")]


def test_else(tmp_path):
    text = "[uwsgi]\nif-env = X\na = 1\nelse =\nb = 2\nendif\n"
    assert pairs(read(tmp_path, text, {})) == [("b", "2")]
    assert pairs(read(tmp_path, text, {"X": "1"})) == [("a", "1")]


def test_for_repeats_each_line_for_every_item(tmp_path):
    text = ("[uwsgi]\nfor = 3031 3032\nsocket = 127.0.0.1:%(_)\nenv = P%(_)=1\nendfor =\n"
            "module = app\n")
    assert pairs(read(tmp_path, text)) == [
        ("socket", "127.0.0.1:3031"), ("socket", "127.0.0.1:3032"),
        ("env", "P3031=1"), ("env", "P3032=1"), ("module", "app")]


def test_for_times_and_for_glob(tmp_path):
    (tmp_path / "a.py").write_text("")
    (tmp_path / "b.py").write_text("")
    text = "[uwsgi]\nfor-times = 2\nn = %(_)\nendfor\nfor-glob = %d*.py\nf = %(_)\nendfor\n"
    assert pairs(read(tmp_path, text)) == [
        ("n", "1"), ("n", "2"), ("f", str(tmp_path / "a.py")), ("f", str(tmp_path / "b.py"))]


def test_blocks_do_not_nest_and_unclosed_blocks_warn(tmp_path):
    res = read(tmp_path, "[uwsgi]\nif-env = A\nif-env = B\nx = 1\n")
    assert pairs(res) == []  # A is unset: the inner opener is swallowed, as in uWSGI
    assert "has no endif/endfor" in res.warnings[-1]
    res = read(tmp_path, "[uwsgi]\nif-env = A\nif-env = B\nx = 1\nendif\n", {"A": "1", "B": "2"})
    assert pairs(res) == [("x", "1")]
    assert "blocks do not nest" in res.warnings[0]


def test_set_placeholder_and_set(tmp_path):
    res = read(tmp_path, "[uwsgi]\nset-placeholder = app=shop\nset-ph = v = 2\n"
                         "set = processes=4\nchdir = /srv/%(app)/%(v)\n")
    assert [(e.key, e.value, e.placeholder) for e in res.entries] == [
        ("app", "shop", True), ("v", "2", True), ("processes", "4", False),
        ("chdir", "/srv/shop/2", False)]


# -- helpers ----------------------------------------------------------------------------------

def test_split_spec(tmp_path):
    assert ini.split_spec("site.ini") == ("site.ini", "")
    assert ini.split_spec("site.ini:prod") == ("site.ini", "prod")
    assert ini.split_spec(":base") == ("", "base")
    odd = tmp_path / "we:ird.ini"
    odd.write_text("")
    assert ini.split_spec(str(odd)) == (str(odd), "")


def test_apply_magic_keeps_percent_paren():
    warnings: list[str] = []
    table = {"%": "%", "(": "%(", "k": "4"}
    assert ini_expand.apply_magic("%(%k * 2) 5%%", table, warnings.append) == "%(4 * 2) 5%"
    assert warnings == []


def test_include_of_a_non_ini_file_is_refused_with_a_warning(tmp_path):
    res = read(tmp_path, "[uwsgi]\nini = %dother.yaml\nmaster = true\n")
    assert pairs(res) == [("master", "true")] and "reads INI files only" in res.warnings[0]


def test_if_hostname_and_for_readline(tmp_path):
    (tmp_path / "ports").write_text("8001\n8002\n")
    text = ("[uwsgi]\nif-hostname = %h\nh = yes\nendif\nif-not-hostname = %h\nh = no\nendif\n"
            "for-readline = %dports\nsocket = :%(_)\nendfor\n")
    assert pairs(read(tmp_path, text)) == [("h", "yes"), ("socket", ":8001"), ("socket", ":8002")]


def test_an_unset_variable_reached_through_a_reference_counts_as_unset(tmp_path):
    res = read(tmp_path, "[uwsgi]\nbase = $(APP_BASE)\nchdir = %(base)/app\n")
    assert res.entries[1].value == "$(APP_BASE)/app"
    assert res.entries[1].unset_env == ["APP_BASE"]
