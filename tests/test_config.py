"""Precedence, the Config object, and every error and warning message.

The seed INI (from ../shared/seeds/001_*.txt, with its U+00A0 spaces, inline
``# comments`` and ``%(project)`` references) is a fixture here so the tests
run without the shared folder; a test checks it is still the seed's text.
"""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from uwsgigw import exitcodes
from uwsgigw.cli import load
from uwsgigw.config.settings import Config, ConfigError, build

SEEDS = Path(__file__).resolve().parent.parent.parent / "shared" / "seeds"

SEED_INI = (
    "[uwsgi]\n"
    "uid=www-data\xa0#\xa0Ubuntu系统下默认用户名\n"
    "gid=www-data\xa0#\xa0Ubuntu系统下默认用户组\n"
    "project=mysite1\xa0\xa0#\xa0项目名\n"
    "base\xa0=\xa0/home/user1\xa0#\xa0项目根目录\n"
    "\xa0\n"
    "home\xa0=\xa0%(base)/Env/%(project)\xa0#\xa0设置项目虚拟环境,Docker部署时不需要\n"
    "chdir=%(base)/%(project)\xa0#\xa0设置工作目录\n"
    "module=%(project).wsgi:application\xa0#\xa0wsgi文件位置\n"
    "\xa0\n"
    "master=True\xa0#\xa0主进程\n"
    "processes=2\xa0#\xa0同时进行的进程数,一般\n"
    "\xa0\n"
    "#\xa0以下uwsgi与nginx通信手段3选一即可\n"
    "#\xa0选项1,\xa0使用unix\xa0socket与nginx通信,仅限于uwsgi和nginx在同一主机上情形\n"
    "#\xa0Nginx配置中uwsgi_pass应指向同一socket文件\n"
    "socket=/run/uwsgi/%(project).sock\n"
    "\xa0\n"
    "\xa0\n"
    "#\xa0选项2,使用TCP\xa0socket与nginx通信\n"
    "#\xa0Nginx配置中uwsgi_pass应指向uWSGI服务器IP和端口\n"
    "#\xa0socket=0.0.0.0:8000\xa0或则\xa0socket=:8000\n"
    "\xa0\n"
    "\xa0\n"
    "#\xa0选项3,使用http协议与nginx通信\n"
    "#\xa0Nginx配置中proxy_pass应指向uWSGI服务器一IP和端口\n"
    "#\xa0http=0.0.0.0:8000\xa0\n"
    "\xa0\n"
    "\xa0\n"
    "#\xa0socket权限设置\n"
    "chown-socket=%(uid):www-data\n"
    "chmod-socket=664\n"
    "\xa0\n"
    "\xa0\n"
    "#\xa0进程文件\n"
    "pidfile=/tmp/%(project)-master.pid\n"
    "\xa0\n"
    "\xa0\n"
    "#\xa0以后台守护进程运行,并将log日志存于temp文件夹。\n"
    "daemonize=/var/log/uwsgi/%(project).log\xa0\n"
    "\xa0\n"
    "\xa0\n"
    "#\xa0服务停止时,自动移除unix\xa0socket和pid文件\n"
    "vacuum=True\n"
    "\xa0\n"
    "\xa0\n"
    "#\xa0为每个工作进程设置请求数的上限。当处理的请求总数超过这个量,进程回收重启。\n"
    "max-requests=5000\n"
    "\xa0\n"
    "\xa0\n"
    "#\xa0当一个请求花费的时间超过这个时间,那么这个请求都会被丢弃。\n"
    "harakiri=60\n"
    "\xa0\n"
    "\xa0\n"
    "#当一个请求被harakiri杀掉会输出一条日志\n"
    "harakiri-verbose=true\n"
    "\xa0\n"
    "\xa0\n"
    "#\xa0uWsgi默认的buffersize为4096,如果请求数据超过这个量会报错。这里设置为64k\n"
    "buffer-size=65536\n"
    "\xa0\n"
    "\xa0\n"
    "#\xa0如果http请求体的大小超过指定的限制,打开http\xa0body缓冲,这里为64k\n"
    "post-buffering=65536\n"
    "\xa0\n"
    "\xa0\n"
    "#开启内存使用情况报告\n"
    "memory-report=true\n"
    "\xa0\n"
    "\xa0\n"
    "#设置平滑的重启(直到处理完接收到的请求)的长等待时间(秒)\n"
    "reload-mercy=10\n"
    "\xa0\n"
    "\xa0\n"
    "#设置工作进程使用虚拟内存超过多少MB就回收重启\n"
    "reload-on-as=1024\n"
)



def write(tmp_path, text: str, name: str = "site.ini") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def cfg_from(tmp_path, text: str, *argv: str, environ=None, check=False) -> Config:
    path = write(tmp_path, text)
    args = ["--ini", path, *argv] + (["--check"] if check else [])
    return load(args, environ or {})


def errors_of(tmp_path, text: str, *argv: str, environ=None, check=False) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cfg_from(tmp_path, text, *argv, environ=environ, check=check)
    assert info.value.exit_code == exitcodes.CONFIG_ERROR
    return info.value.messages


# -- the seed file ------------------------------------------------------------------------

def test_seed_fixture_is_the_seed_files_ini():
    files = glob.glob(str(SEEDS / "001_*.txt"))
    if not files:
        pytest.skip("../shared/seeds is not here")
    text = Path(files[0]).read_text(encoding="utf-8")
    start = text.index("[uwsgi]")
    end = text.index("reload-on-as=1024") + len("reload-on-as=1024")
    assert SEED_INI == text[start:end] + "\n"


def test_seed_ini_parses_to_the_expected_values(tmp_path):
    cfg = cfg_from(tmp_path, SEED_INI)
    assert cfg.uid == "www-data" and cfg.gid == "www-data"
    assert cfg.home == "/home/user1/Env/mysite1"
    assert cfg.chdir == "/home/user1/mysite1"
    assert cfg.module == "mysite1.wsgi:application"
    assert cfg.master is True and cfg.processes == 2
    assert cfg.socket == ["/run/uwsgi/mysite1.sock"]
    assert cfg.chown_socket == "www-data:www-data"
    assert cfg.chmod_socket == "664"
    assert cfg.pidfile == "/tmp/mysite1-master.pid"
    assert cfg.daemonize == "/var/log/uwsgi/mysite1.log"
    assert cfg.vacuum is True
    assert cfg.max_requests == 5000 and cfg.harakiri == 60 and cfg.harakiri_verbose is True
    assert cfg.buffer_size == 65535  # 65536 in the file: the 16-bit field's maximum
    assert cfg.post_buffering == 65536
    assert cfg.memory_report is True and cfg.reload_mercy == 10 and cfg.reload_on_as == 1024
    assert cfg.callable == "application" and cfg.threads == 1
    # project and base are placeholders other lines refer to: no warning
    assert not [w for w in cfg.warnings if "'project'" in w or "'base'" in w]
    # only things missing on this machine are left
    assert all("on this machine" in w for w in cfg.warnings), cfg.warnings


def test_seed_sources(tmp_path):
    cfg = cfg_from(tmp_path, SEED_INI)
    assert cfg.source("buffer-size").endswith("site.ini:60")
    assert cfg.source("threads") == "default"
    assert cfg.sources["socket"].endswith("site.ini:17")


# -- precedence ------------------------------------------------------------------------------

def test_defaults():
    cfg = build({}, {}, check=True)
    assert (cfg.buffer_size, cfg.processes, cfg.socket_timeout, cfg.listen) == (4096, 1, 4.0, 1024)
    assert cfg.need_app is True and cfg.socket == []


def test_ini_then_environment_then_command_line(tmp_path):
    text = "[uwsgi]\nsocket = :1\nprocesses = 2\nthreads = 3\nharakiri = 5\n"
    cfg = cfg_from(tmp_path, text, "--threads", "9",
                   environ={"UWSGIGW_THREADS": "7", "UWSGIGW_HARAKIRI": "6"})
    assert (cfg.processes, cfg.harakiri, cfg.threads) == (2, 6, 9)
    assert cfg.source("processes").endswith("site.ini:3")
    assert cfg.source("harakiri") == "environment UWSGIGW_HARAKIRI"
    assert cfg.source("threads") == "command line (--threads)"


def test_lists_accumulate_in_ini_files_and_a_higher_layer_replaces_them(tmp_path):
    other = write(tmp_path, "[uwsgi]\nenv = C=3\n", name="other.ini")
    text = "[uwsgi]\nsocket = :1\nenv = A=1\nenv = B=2\n"
    cfg = cfg_from(tmp_path, text, "--ini", other)
    assert cfg.env == ["A=1", "B=2", "C=3"] and cfg.socket == [":1"]
    cfg = cfg_from(tmp_path, text, "--socket", ":2", "-s", ":3")
    assert cfg.socket == [":2", ":3"]


def test_http_socket_names_accumulate_into_one_list(tmp_path):
    text = ("[uwsgi]\nhttp = :8001\nhttp11-socket = :8002\nhttp-socket = /run/h.sock\n"
            "socket = :1\nhttp-timeout = 9\n")
    cfg = cfg_from(tmp_path, text)
    assert cfg.http_socket == [":8001", ":8002", "/run/h.sock"] and cfg.socket == [":1"]
    assert cfg.socket_timeout == 9.0 and cfg.source("socket-timeout").endswith("site.ini:6")
    # a higher layer's list replaces the lower one's, whichever name it uses
    cfg = cfg_from(tmp_path, text, "--http", ":9001", "--http-socket", ":9002",
                   environ={"UWSGIGW_HTTP_SOCKET": ":9000"})
    assert cfg.http_socket == [":9001", ":9002"]
    assert cfg_from(tmp_path, text, environ={"UWSGIGW_HTTP_SOCKET": ":9000"}
                    ).http_socket == [":9000"]
    assert cfg_from(tmp_path, text, "--http-timeout", "2").socket_timeout == 2.0
    assert cfg_from(tmp_path, text, "-z", "3", environ={"UWSGIGW_SOCKET_TIMEOUT": "1"}
                    ).socket_timeout == 3.0


def test_http_settings_defaults_and_layers(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nhttp = :8000\n")
    assert cfg.http_keepalive is True and cfg.http_keepalive_timeout == 75.0
    assert cfg.http_headers_timeout == 60.0
    assert cfg.forwarded_allow_ips == ["127.0.0.1/32", "::1/128"]
    cfg = cfg_from(tmp_path, "[uwsgi]\nhttp = :8000\nhttp-keepalive = 0\n"
                   "forwarded-allow-ips = 10.0.0.0/8\nforwarded-allow-ips = 192.168.0.1\n",
                   "--http-headers-timeout", "5")
    assert cfg.http_keepalive is False and cfg.http_headers_timeout == 5.0
    assert cfg.forwarded_allow_ips == ["10.0.0.0/8", "192.168.0.1/32"]  # replaces the default
    assert cfg_from(tmp_path, "[uwsgi]\nhttp = :8000\n", "--no-http-keepalive"
                    ).http_keepalive is False
    assert ("site.ini:3: forwarded-allow-ips = '*': expected IP networks separated by commas "
            "or spaces" in errors_of(tmp_path, "[uwsgi]\nhttp = :8000\nforwarded-allow-ips = *\n")[0])


def test_http_options_uwsgi_has_and_uwsgigw_always_does_are_notes(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nhttp = :8000\nhttp-auto-chunked = true\n"
                   "http-chunked-input\nhttp-manage-expect = 1\nhttp-raw-body\n"
                   "http-processes = 4\nhttp-workers = 2\n")
    assert not [w for w in cfg.warnings if "uWSGI option" in w]
    notes = "\n".join(cfg.notes)
    for name in ("http-auto-chunked", "http-chunked-input", "http-manage-expect",
                 "http-raw-body", "http-processes"):
        assert "%s is accepted: " % name in notes
    assert "always sent chunked" in notes and "always de-chunked" in notes
    assert "the HTTP listener runs in the workers" in notes and cfg.http_processes == 2
    cfg = cfg_from(tmp_path, "[uwsgi]\nhttp = :8000\nhttp-websockets\nhttps-socket = :8443\n")
    assert len([w for w in cfg.warnings if "uWSGI option uwsgigw does not support" in w]) == 1
    assert "http-websockets is accepted: WebSockets always work for ASGI apps" in \
        "\n".join(cfg.notes)


def test_scalars_take_the_last_value(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket=:1\nprocesses = 2\nworkers = 5\n")
    assert cfg.processes == 5


def test_environment_booleans_and_unknown_variables(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket=:1\nmaster = true\n",
                   environ={"UWSGIGW_MASTER": "off", "UWSGIGW_PROCESES": "3",
                            "UWSGIGW_HTTPS": ":443"})
    assert cfg.master is False
    assert ("environment UWSGIGW_PROCESES: 'proceses' is not a uwsgigw or uWSGI option "
            "(did you mean 'processes'?); ignored") in cfg.warnings
    assert any(w.startswith("environment UWSGIGW_HTTPS: 'https' is a uWSGI option")
               for w in cfg.warnings)


def test_ini_files_from_the_environment(tmp_path):
    path = write(tmp_path, "[uwsgi]\nsocket = :1\nprocesses = 3\n")
    assert build({}, {"UWSGIGW_INI": path}).processes == 3


# -- errors ---------------------------------------------------------------------------------

def test_bad_value_names_option_value_expectation_and_line(tmp_path):
    messages = errors_of(tmp_path, "[uwsgi]\nsocket = :1\nprocesses = two\n")
    assert messages == ["%s:3: processes = 'two': expected a whole number, e.g. 4"
                        % (tmp_path / "site.ini")]


def test_bad_values_from_environment_and_command_line(tmp_path):
    messages = errors_of(tmp_path, "[uwsgi]\nsocket = :1\n", "--buffer-size", "1m",
                         environ={"UWSGIGW_LISTEN": "lots"})
    assert messages == [
        "environment UWSGIGW_LISTEN: listen = 'lots': expected a whole number, e.g. 4",
        "command line (--buffer-size): buffer-size = '1m': expected a size in bytes from 1 to "
        "65535 without a unit suffix (uWSGI has no k/m/g suffixes), e.g. 8192",
    ]


def test_every_bad_value_is_reported(tmp_path):
    messages = errors_of(tmp_path, "[uwsgi]\nsocket = :1\nbuffer-size = 70000\nchmod-socket = 999\n"
                                   "env = NOEQUALS\nmount = api=app\n")
    assert [m.split(": ", 1)[1] for m in messages] == [
        "buffer-size = '70000': expected a size in bytes from 1 to 65535 of at most 65536",
        "chmod-socket = '999': expected three octal digits such as 660 or 664",
        "env = 'NOEQUALS': expected KEY=VALUE",
        "mount = 'api=app': expected /PREFIX=module[:callable] or /PREFIX=path/to/app.py",
    ]


def test_bad_value_even_when_a_later_line_overrides_it(tmp_path):
    assert errors_of(tmp_path, "[uwsgi]\nsocket=:1\nprocesses = two\nprocesses = 2\n")


def test_missing_ini_file(tmp_path):
    with pytest.raises(ConfigError, match="ini file .*missing.ini does not exist"):
        load(["--ini", str(tmp_path / "missing.ini")], {})


# -- unknown keys, strict, placeholders --------------------------------------------------------

def test_unknown_key_warns_with_file_line_and_closest_name(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = :1\nguid = www-data\nvaccum = true\n")
    path = tmp_path / "site.ini"
    assert cfg.warnings[:2] == [
        "%s:3: 'guid' is not a uwsgigw or uWSGI option (did you mean 'gid'?); ignored" % path,
        "%s:4: 'vaccum' is not a uwsgigw or uWSGI option (did you mean 'vacuum'?); ignored" % path,
    ]


def test_missing_equals_is_pointed_out(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = :1\nstatic-map /static=./static\n")
    assert "'static-map /static' is not an option: is the '=' after 'static-map' missing?" \
        in cfg.warnings[0]


def test_unsupported_uwsgi_option_says_what_to_do(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = :1\ntouch-reload = /srv/app/reload\n"
                             "attach-daemon = celery worker\n")
    path = tmp_path / "site.ini"
    assert cfg.warnings[:2] == [
        "%s:3: 'touch-reload' is a uWSGI option uwsgigw does not support: reload with SIGHUP "
        "(uwsgigw --reload PIDFILE) from your deploy script or a systemd .path unit; "
        "ignored" % path,
        "%s:4: 'attach-daemon' is a uWSGI option uwsgigw does not support: run it as its own "
        "systemd unit (or supervisor program); ignored" % path,
    ]


def test_unreferenced_placeholder_warns_referenced_one_does_not(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = :1\nproject = shop\nunused_thing = 1\n"
                             "module = %(project).wsgi\n")
    assert cfg.module == "shop.wsgi"
    assert cfg.warnings == ["%s:4: 'unused_thing' is not a uwsgigw or uWSGI option; ignored "
                            "(a placeholder nothing refers to?)" % (tmp_path / "site.ini")]


def test_strict_makes_unknown_keys_fatal_but_not_unsupported_ones(tmp_path):
    text = "[uwsgi]\nstrict = true\nsocket = :1\nhttps = :443\nguid = x\n"
    messages = errors_of(tmp_path, text)
    assert messages == ["%s:5: 'guid' is not a uwsgigw or uWSGI option (did you mean 'gid'?) "
                        "(strict mode)" % (tmp_path / "site.ini")]
    assert errors_of(tmp_path, "[uwsgi]\nsocket = :1\nguid = x\n", "--strict")
    assert errors_of(tmp_path, "[uwsgi]\nsocket = :1\nguid = x\n",
                     environ={"UWSGIGW_STRICT": "1"})
    cfg = cfg_from(tmp_path, "[uwsgi]\nstrict = true\nsocket = :1\nhttps = :443\n")
    assert cfg.strict is True and "'https' is a uWSGI option" in cfg.warnings[0]


def test_strict_mode_allows_no_placeholders_except_set_placeholder(tmp_path):
    messages = errors_of(tmp_path, "[uwsgi]\nstrict = true\nsocket = :1\nproject = shop\n"
                                   "module = %(project).wsgi\n")
    assert messages == ["%s:4: 'project' is not an option; strict mode allows no placeholders: "
                        "write set-placeholder = project=shop" % (tmp_path / "site.ini")]
    cfg = cfg_from(tmp_path, "[uwsgi]\nstrict = true\nsocket = :1\n"
                             "set-placeholder = project=shop\nmodule = %(project).wsgi\n")
    assert cfg.module == "shop.wsgi"


def test_a_placeholder_cannot_be_an_option_name(tmp_path):
    assert "is an option, not a placeholder name" in errors_of(
        tmp_path, "[uwsgi]\nsocket=:1\nset-ph = processes=2\n")[0]


def test_unset_environment_variable_leaves_the_line_out(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = :1\nworkers = $(UWSGI_WORKERS)\n")
    assert cfg.processes == 1
    assert cfg.warnings[0] == (
        "%s:3: workers = $(UWSGI_WORKERS): environment variable UWSGI_WORKERS is not set; the "
        "line is left out (uWSGI would use the text itself)" % (tmp_path / "site.ini"))
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = :1\nworkers = $(UWSGI_WORKERS)\n",
                   environ={"UWSGI_WORKERS": "6"})
    assert cfg.processes == 6


def test_unresolved_reference_in_an_option_warns_but_not_in_log_format(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = :1\nchdir = /srv/%(app)\n"
                             "log-format = %(addr) %(method) %(uri) => %(status)\n")
    assert cfg.log_format == "%(addr) %(method) %(uri) => %(status)"
    assert cfg.warnings[0].endswith("chdir = /srv/%(app): %(app) refers to no key; left as written")
    assert not [w for w in cfg.warnings if "log-format" in w]


def test_mapped_options_get_notes_not_warnings(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = :1\nthunder-lock = true\nenable-threads\n")
    assert cfg.thunder_lock is True and cfg.enable_threads is True
    assert cfg.notes == [
        "%s:3: thunder-lock is accepted: the kernel already wakes one worker per connection"
        % (tmp_path / "site.ini"),
        "%s:4: enable-threads is accepted: Python threads always work in uwsgigw"
        % (tmp_path / "site.ini")]


def test_boolean_word_for_a_number(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = :1\npost-buffering = true\n")
    assert cfg.post_buffering == 0
    assert "'true' is not a number; uWSGI reads it as 0" in cfg.warnings[0]


# -- whole-configuration checks ----------------------------------------------------------------

def test_no_socket_stops_start_up_and_check(tmp_path):
    text = "[uwsgi]\nhttps = :8443,cert.pem,key.pem\nmodule = app\n"
    messages = errors_of(tmp_path, text)
    assert messages == ["no socket to serve on: uwsgigw does not serve https = :8443,cert.pem,"
                        "key.pem (%s:2). Add socket = 127.0.0.1:8000 (or a unix socket path) "
                        "for nginx's uwsgi_pass, or http-socket = 127.0.0.1:8000 for plain "
                        "HTTP (proxy_pass); TLS ends in nginx or the load balancer"
                        % (tmp_path / "site.ini")]
    # --check still builds the Config (to check the rest); the CLI reports it as an error.
    cfg = cfg_from(tmp_path, text, check=True)
    assert cfg.stoppers == messages
    assert not [w for w in cfg.warnings if "no socket to serve on" in w]
    neither = errors_of(tmp_path, "[uwsgi]\nmodule = app\n")[0]
    assert "set socket = ADDRESS" in neither and "http-socket = ADDRESS" in neither


@pytest.mark.parametrize("text", ["http = :8000", "http-socket = :8000", "http11-socket = :8000"])
def test_an_http_socket_is_a_socket(tmp_path, text):
    cfg = cfg_from(tmp_path, "[uwsgi]\n%s\nmodule = app\n" % text)
    assert cfg.http_socket == [":8000"] and cfg.socket == []
    assert not [w for w in cfg.warnings if "uWSGI option" in w]


def test_systemd_socket_activation_needs_no_socket(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nmodule = app\n", environ={"LISTEN_FDS": "1"})
    assert cfg.socket == []


def test_missing_include_stops_start_up_and_check(tmp_path):
    text = "[uwsgi]\nsocket = :1\nini = /nonexistent/base.ini\n"
    assert "ini file /nonexistent/base.ini does not exist" in errors_of(tmp_path, text)[0]
    cfg = cfg_from(tmp_path, text, check=True)
    assert "ini file /nonexistent/base.ini does not exist" in cfg.stoppers[0]
    assert cfg.warnings == []


def test_missing_paths_users_and_groups_are_warnings(tmp_path):
    text = ("[uwsgi]\nsocket = /nonexistent/run/app.sock\nchdir = /nonexistent/app\n"
            "home = /nonexistent/venv\nwsgi-file = app.py\npidfile = /nonexistent/x.pid\n"
            "uid = no-such-user-xyz\ngid = no-such-group-xyz\nlogto = %dlog/app.log\n")
    cfg = cfg_from(tmp_path, text)
    text_warnings = "\n".join(cfg.warnings)
    for expected in ("socket = /nonexistent/run/app.sock: directory /nonexistent/run does not exist",
                     "chdir = /nonexistent/app: no such directory",
                     "home = /nonexistent/venv: no such directory",
                     "wsgi-file = app.py: no such file",
                     "pidfile = /nonexistent/x.pid: directory /nonexistent does not exist",
                     "uid = no-such-user-xyz: no user 'no-such-user-xyz'",
                     "gid = no-such-group-xyz: no group 'no-such-group-xyz'",
                     "logto = %s/log/app.log: directory %s/log does not exist"
                     % (tmp_path, tmp_path)):
        assert expected in text_warnings


def test_wsgi_file_relative_to_chdir_is_found(tmp_path):
    (tmp_path / "app.py").write_text("")
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = :1\nchdir = %d\nwsgi-file = app.py\n")
    assert not cfg.warnings


def test_module_and_wsgi_file_and_world_writable_socket(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = /tmp/x.sock\nchmod-socket = 666\n"
                             "module = a\nwsgi-file = /nonexistent.py\n")
    warnings = "\n".join(cfg.warnings)
    assert "module and wsgi-file are both set; module a is used" in warnings
    assert "chmod-socket = 666 lets every local user connect" in warnings


def test_pythonpath_globs_expand_like_uwsgi(tmp_path):
    (tmp_path / "lib1").mkdir()
    (tmp_path / "lib2").mkdir()
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = :1\npythonpath = %dlib*\npythonpath = /x/y\n")
    assert cfg.pythonpath == [str(tmp_path / "lib1"), str(tmp_path / "lib2"), "/x/y"]
    assert cfg.item_sources["pythonpath"][2].endswith("site.ini:4")


def test_print_config_format(tmp_path):
    cfg = cfg_from(tmp_path, "[uwsgi]\nsocket = :1\nsocket = :2\nmaster\n")
    lines = cfg.format().splitlines()
    path = tmp_path / "site.ini"
    assert lines[0] == "[uwsgi]"
    assert "socket = :1  ; %s:2" % path in lines and "socket = :2  ; %s:3" % path in lines
    assert "master = true  ; %s:4" % path in lines
    assert "buffer-size = 4096  ; default" in lines and "; module = (not set)" in lines
    assert "socket-timeout = 4  ; default" in lines
    # a list whose default has several items shows each of them
    assert "forwarded-allow-ips = 127.0.0.1/32  ; default" in lines
    assert "forwarded-allow-ips = ::1/128  ; default" in lines
    assert Config.defaults().item_sources["forwarded_allow_ips"] == ["default", "default"]


def test_config_attributes_and_dict():
    cfg = build({"socket": (":1",), "master": True}, {})
    assert cfg.as_dict()["master"] is True and cfg.socket == [":1"]
    assert "buffer_size=4096" in repr(cfg)


def test_defaults_factory():
    cfg = Config.defaults(processes=3, module="app")
    assert cfg.processes == 3 and cfg.module == "app" and cfg.buffer_size == 4096
    assert cfg.source("processes") == "given" and cfg.source("buffer-size") == "default"
    assert cfg.mount == [] and Config.defaults().mount is not cfg.mount  # no shared lists
    with pytest.raises(TypeError, match="not options: prosesses"):
        Config.defaults(prosesses=3)


@pytest.mark.parametrize("values, master", [
    ({}, False), ({"processes": 2}, True), ({"master": True}, True),
    ({"harakiri": 30}, True), ({"max_requests": 100}, True), ({"reload_on_rss": 512}, True),
    ({"reload_on_as": 1024}, True),
    ({"stats": "127.0.0.1:9191"}, True),  # the master serves the stats, as in uWSGI
    ({"stats_http": "127.0.0.1:9192"}, True),  # an HTTP stats socket of its own
    ({"stats_http": "on"}, False),  # true alone only changes what stats= speaks
    ({"threads": 4, "lazy_apps": True, "asgi": True}, False),
])
def test_runs_master_is_decided_by_the_config(values, master):
    assert Config.defaults(**values).runs_master is master


def test_runs_master_from_the_command_line():
    assert load(["-s", ":1", "--stats", "127.0.0.1:9191"], {}).runs_master
    assert load(["-s", ":1", "--stats-http", "127.0.0.1:9192"], {}).runs_master
    cfg = load(["-s", ":1", "--stats", "127.0.0.1:9191"], {})
    assert cfg.master is False  # derived, not written back: --print-config shows the option


def test_or_default_is_uwsgis_zero_means_unset():
    assert Config.defaults(reload_mercy=0).or_default("reload_mercy") == 60
    assert Config.defaults(reload_mercy=5).or_default("reload_mercy") == 5
    assert Config.defaults(worker_reload_mercy=0).or_default("worker_reload_mercy") == 60
