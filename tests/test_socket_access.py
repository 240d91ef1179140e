"""A unix socket nginx's worker user cannot connect to (issue 12, section 5).

Started as root, the socket is root:root 0660 and nginx (its workers run as
www-data here, as on Debian/Ubuntu) answers 502 with ``connect() ...
(13: Permission denied)``. uwsgigw warns at start-up, naming chown-socket and
chmod-socket; with ``chown-socket = www-data:www-data`` (the README's and
nginx/site.ini's setting) nginx gets through and nothing is said.
"""

from __future__ import annotations

import os
import pwd

import pytest

from conftest import short_tmpdir
from test_master_support import APP, get
from uwsgigw.process import perms

needs_root_and_www_data = pytest.mark.skipif(
    os.geteuid() != 0 or "www-data" not in {p.pw_name for p in pwd.getpwall()},
    reason="needs root (nginx's user directive) and a www-data user")
WARNING_WORDS = ("chown-socket", "chmod-socket", "502")


def socket_in(mode: int) -> str:
    directory = short_tmpdir()
    os.chmod(directory, mode)
    return os.path.join(directory, "app.sock")


def access_warnings(server) -> list[str]:
    return [line for line in server.log_text().splitlines()
            if " WARNING " in line and "nginx usually runs as" in line]


@needs_root_and_www_data
def test_root_owned_socket_warns_and_nginx_answers_502(uwsgigw_factory, nginx_factory):
    sock = socket_in(0o755)  # a /run/uwsgigw-like directory: anyone may pass
    server = uwsgigw_factory("--socket", sock, "--module", APP, socket=sock)
    nginx = nginx_factory(sock, user="www-data")
    assert get(nginx.port, "/").status == 502
    assert "(13: Permission denied)" in nginx.error_log()
    (line,) = access_warnings(server)
    assert "socket %s is root:root mode 0660" % sock in line
    assert all(word in line for word in WARNING_WORDS), line
    assert "www-data" in line


@needs_root_and_www_data
def test_chown_socket_for_nginx_serves_without_a_warning(uwsgigw_factory, nginx_factory):
    sock = socket_in(0o755)
    server = uwsgigw_factory("--socket", sock, "--module", APP,
                             "--chown-socket", "www-data:www-data", socket=sock)
    nginx = nginx_factory(sock, user="www-data")
    assert get(nginx.port, "/").status == 200
    assert access_warnings(server) == []


@needs_root_and_www_data
def test_a_directory_nginx_cannot_pass_is_named(uwsgigw_factory, nginx_factory):
    sock = socket_in(0o700)  # the socket is fine, its directory is not
    server = uwsgigw_factory("--socket", sock, "--module", APP,
                             "--chown-socket", "www-data:www-data", socket=sock)
    nginx = nginx_factory(sock, user="www-data")
    assert get(nginx.port, "/").status == 502
    assert "(13: Permission denied)" in nginx.error_log()
    (line,) = access_warnings(server)
    assert "directory %s (root:root mode 0700)" % os.path.dirname(sock) in line


def test_no_warning_when_no_nginx_user_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(perms, "NGINX_USERS", ("no-such-user-xyz",))
    st = perms.Mode(0, 0, 0o140600)
    assert perms.socket_warning(str(tmp_path / "s.sock"), st) is None
