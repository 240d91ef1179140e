"""App loading and mount selection, uWSGI style."""

import sys

import pytest

from uwsgigw.app import AppLoadError, AppTable, load_apps, load_callable, prepare_process
from uwsgigw.config.settings import Config


cfg = Config.defaults  # every option at its default, the keywords on top


@pytest.fixture
def appdir(tmp_path, monkeypatch):
    (tmp_path / "myapp.py").write_text(
        "def application(e, s): return [b'default']\n"
        "def app(e, s): return [b'named']\n"
        "notcallable = 5\n")
    (tmp_path / "broken.py").write_text("import does_not_exist_anywhere\n")
    (tmp_path / "site.wsgi").write_text("def application(e, s): return [b'file']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("myapp", "broken"):
        sys.modules.pop(name, None)


def test_module_default_and_named_callable(appdir):
    assert load_callable("myapp")(None, None) == [b"default"]
    assert load_callable("myapp:app")(None, None) == [b"named"]
    assert load_callable("myapp", "app")(None, None) == [b"named"]


def test_wsgi_file(appdir):
    assert load_callable(str(appdir / "site.wsgi"))(None, None) == [b"file"]


def test_module_named_like_a_file_is_imported(appdir):
    pkg = appdir / "proj"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "wsgi.py").write_text("def application(e, s): return [b'module']\n")
    try:
        app = load_apps(cfg(module="proj.wsgi:application")).default
        assert app(None, None) == [b"module"]
    finally:
        sys.modules.pop("proj.wsgi", None)
        sys.modules.pop("proj", None)


def test_errors_are_clear(appdir):
    with pytest.raises(AppLoadError, match="no attribute 'nope'"):
        load_callable("myapp:nope")
    with pytest.raises(AppLoadError, match="not a WSGI callable"):
        load_callable("myapp:notcallable")
    with pytest.raises(ModuleNotFoundError, match="does_not_exist_anywhere"):
        load_callable("broken")
    with pytest.raises(AppLoadError, match="no such file"):
        load_callable(str(appdir / "missing.py"))
    with pytest.raises(AppLoadError, match="no application configured"):
        load_apps(cfg())


def test_mounts_longest_prefix_with_manage_script_name(appdir):
    table = load_apps(cfg(module="myapp", mount=["/api=myapp:app",
                                                  "/api/v2=%s" % (appdir / "site.wsgi")],
                          manage_script_name=True))
    pick = table.picker()
    env = {"SCRIPT_NAME": "", "PATH_INFO": "/api/v2/users"}
    assert pick(env)(None, None) == [b"file"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/api/v2", "/users")
    env = {"SCRIPT_NAME": "", "PATH_INFO": "/api"}
    assert pick(env)(None, None) == [b"named"]
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/api", "")
    env = {"SCRIPT_NAME": "", "PATH_INFO": "/apiary"}
    assert pick(env)(None, None) == [b"default"]
    assert env["SCRIPT_NAME"] == ""


def test_mounts_by_script_name_without_manage(appdir):
    table = AppTable(None, [("/a", lambda e, s: [b"a"])], manage_script_name=False)
    assert table.pick({"SCRIPT_NAME": "/a", "PATH_INFO": "/x"})(None, None) == [b"a"]
    assert table.pick({"SCRIPT_NAME": "", "PATH_INFO": "/a/x"}) is None


def test_bad_mount_spec(appdir):
    with pytest.raises(AppLoadError, match="mount"):
        load_apps(cfg(mount=["api=myapp"]))


def test_prepare_process_env_chdir_pythonpath(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("UWSGIGW_TEST_X", "restored-after-test")
    prepare_process(cfg(env=["UWSGIGW_TEST_X=a=b"], chdir=str(tmp_path),
                        pythonpath=[str(tmp_path / "lib")]))
    import os
    assert os.environ["UWSGIGW_TEST_X"] == "a=b"
    assert os.getcwd() == str(tmp_path)
    assert sys.path[0] == str(tmp_path) and str(tmp_path / "lib") in sys.path
    with pytest.raises(AppLoadError, match="chdir"):
        prepare_process(cfg(chdir=str(tmp_path / "missing")))


def test_virtualenv_site_packages(tmp_path, monkeypatch):
    import os
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("VIRTUAL_ENV", "restored-after-test")
    sp = tmp_path / "venv" / "lib" / ("python%d.%d" % sys.version_info[:2]) / "site-packages"
    sp.mkdir(parents=True)
    (sp / "venv_only_mod_xyz.py").write_text("application = lambda e, s: [b'venv']\n")
    prepare_process(cfg(home=str(tmp_path / "venv")))
    try:
        assert load_callable("venv_only_mod_xyz")(None, None) == [b"venv"]
    finally:
        sys.modules.pop("venv_only_mod_xyz", None)
    assert os.environ["VIRTUAL_ENV"] == str(tmp_path / "venv")
    with pytest.raises(AppLoadError, match="virtualenv"):
        prepare_process(cfg(home=str(tmp_path / "nope")))
