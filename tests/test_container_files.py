"""The container files in nginx/ work as shipped: Dockerfile, container.ini
(the image's /app/uwsgi.ini) and k8s.yaml.

No docker or Kubernetes here: the commands are read out of the files (so a
file and its test cannot drift) and run against a real server started with
the Dockerfile's own CMD on a copy of container.ini, where only the
machine-specific lines differ (socket address, project directory, module).
The Dockerfile's CMD also runs as PID 1 of a fresh PID namespace, as in a
container: it answers the probe, reaps orphans, reloads on SIGHUP and
stops on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest

from conftest import (APPS_DIR, UwsgigwProcess, nginx_vars, server_env, uwsgi_request,
                      uwsgigw_cmd, wait_until)
from uwsgigw import devnginx
from uwsgigw.devnginx import free_port

IMAGE_INI = "/app/uwsgi.ini"   # where the Dockerfile puts container.ini
APP = "rolling_apps:application"


def shipped(name: str) -> str:
    return (devnginx.default_nginx_dir() / name).read_text()


# -- reading the files ----------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined,
    comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def last_instruction(name: str) -> str:
    found = [args for word, args in dockerfile_instructions(shipped("Dockerfile"))
             if word == name]
    assert found, "the Dockerfile has no %s" % name
    return found[-1]  # the final stage's


def docker_cmd() -> list[str]:
    """The final stage's CMD, which must be the exec form (a JSON list)."""
    return json.loads(last_instruction("CMD"))


def docker_healthcheck() -> list[str]:
    """HEALTHCHECK [OPTIONS] CMD [...]: the command, exec form."""
    _, sep, command = last_instruction("HEALTHCHECK").partition("CMD ")
    assert sep, "HEALTHCHECK without CMD"
    return json.loads(command)


def k8s_documents() -> list[str]:
    return [d for d in re.split(r"^---\s*$", shipped("k8s.yaml"), flags=re.M)
            if re.search(r"^kind:", d, re.M)]


def k8s_values(doc: str, key: str) -> list[str]:
    """The values of a document's ``key: value`` lines, in order (comments cut)."""
    return [m.group(1).split(" #")[0].strip()
            for m in re.finditer(r"^\s*%s:\s*(\S.*)$" % re.escape(key), doc, re.M)]


def k8s_value(doc: str, key: str) -> str:
    """The value of the only ``key:`` line of a document."""
    values = k8s_values(doc, key)
    assert len(values) == 1, "%s: %r" % (key, values)
    return values[0]


def k8s_probe_commands() -> dict[str, list[str]]:
    """probe name -> its exec command (a flow list, which is JSON)."""
    deployment = [d for d in k8s_documents() if k8s_value(d, "kind") == "Deployment"][0]
    probes = {}
    for m in re.finditer(r"^(\s*)(\w+Probe):\s*(?:#.*)?\n((?:\1\s+.*\n)+)", deployment, re.M):
        command = re.search(r"^\s*command:\s*(\[.*\])\s*$", m.group(3), re.M)
        assert command, "%s has no exec command" % m.group(2)
        probes[m.group(2)] = json.loads(command.group(1))
    return probes


def ini_value(text: str, key: str) -> str:
    m = re.search(r"^%s\s*=\s*(\S+)" % re.escape(key), text, re.M)
    assert m, "container.ini lacks %s" % key
    return m.group(1)


def test_yaml_is_well_formed():
    """A light structural check (no YAML parser among the test dependencies):
    spaces only, two per level, every line a comment, ``key:``, ``key: value``
    or a ``- `` item, and flow lists valid JSON."""
    text = shipped("k8s.yaml")
    assert "\t" not in text
    for n, line in enumerate(text.splitlines(), 1):
        body = line.strip()
        if not body or body.startswith("#") or body == "---":
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, "line %d: odd indentation" % n
        assert re.match(r"^(- )?[A-Za-z][\w.-]*:(\s+\S.*)?$", body), "line %d: %r" % (n, line)
        flow = re.search(r":\s+(\[.*\])\s*(#.*)?$", body)
        if flow:
            json.loads(flow.group(1))
    assert sorted(k8s_value(d, "kind") for d in k8s_documents()) == ["Deployment", "Service"]


# -- the files agree with one another ---------------------------------------------------

def test_dockerfile_runs_uwsgigw_as_the_one_process():
    assert docker_cmd() == ["uwsgigw", "--ini", IMAGE_INI]
    assert any(word == "COPY" and args.endswith(" " + IMAGE_INI)
               for word, args in dockerfile_instructions(shipped("Dockerfile")))
    assert last_instruction("STOPSIGNAL") == "SIGTERM"
    assert not any(word == "ENTRYPOINT" for word, _ in
                   dockerfile_instructions(shipped("Dockerfile")))
    port = ini_value(shipped("container.ini"), "socket").rpartition(":")[2]
    assert last_instruction("EXPOSE") == port


def test_probes_are_the_dockerfile_healthcheck():
    probe = docker_healthcheck()
    assert probe[:2] == ["uwsgigw", "healthcheck"] and "-q" in probe
    assert probe[probe.index("--ini") + 1] == IMAGE_INI
    probes = k8s_probe_commands()
    assert set(probes) == {"startupProbe", "readinessProbe", "livenessProbe"}
    assert all(command == probe for command in probes.values()), probes
    deployment = [d for d in k8s_documents() if k8s_value(d, "kind") == "Deployment"][0]
    # the container's own command (before the probes' and preStop's) is the CMD
    assert json.loads(k8s_values(deployment, "command")[0]) == docker_cmd()


def test_stop_grace_covers_reload_mercy():
    """The orchestrator's SIGKILL comes after uwsgigw's own deadline."""
    mercy = int(ini_value(shipped("container.ini"), "reload-mercy"))
    deployment = [d for d in k8s_documents() if k8s_value(d, "kind") == "Deployment"][0]
    grace = int(k8s_value(deployment, "terminationGracePeriodSeconds"))
    pre_stop = re.search(r"preStop:.*\n\s*exec:\s*\n\s*command:\s*(\[.*\])", deployment)
    sleep = json.loads(pre_stop.group(1))
    assert sleep[0] == "sleep"
    assert grace >= int(sleep[1]) + mercy + 5
    # docker stop waits 10 s by default: the Dockerfile says how long instead.
    stop_timeout = re.search(r"--stop-timeout (\d+)", shipped("Dockerfile"))
    assert stop_timeout and int(stop_timeout.group(1)) > mercy
    # the probe gives up (--timeout) before Kubernetes' timeoutSeconds does
    probe = docker_healthcheck()
    timeouts = {int(v) for v in re.findall(r"timeoutSeconds:\s*(\d+)", deployment)}
    assert timeouts and float(probe[probe.index("--timeout") + 1]) < min(timeouts)


def test_service_targets_the_container_port():
    service = [d for d in k8s_documents() if k8s_value(d, "kind") == "Service"][0]
    deployment = [d for d in k8s_documents() if k8s_value(d, "kind") == "Deployment"][0]
    port = ini_value(shipped("container.ini"), "socket").rpartition(":")[2]
    assert k8s_value(deployment, "containerPort") == port
    assert re.search(r"^\s*- name: %s$" % k8s_value(service, "targetPort"), deployment, re.M)


# -- the commands run ---------------------------------------------------------------------

def local_ini(tmp_path, port: int) -> str:
    """container.ini with its machine-specific lines rewritten."""
    text = shipped("container.ini")
    for key, value in (("socket", "127.0.0.1:%d" % port), ("chdir", str(APPS_DIR)),
                       ("module", APP)):
        text, n = re.subn(r"^%s\s*=\s*\S+" % key, "%s = %s" % (key, value), text, flags=re.M)
        assert n == 1, key
    path = tmp_path / "uwsgi.ini"
    path.write_text(text)
    return str(path)


def image_command(command: list[str], ini: str) -> list[str]:
    """A command of the files, run from this venv, with the copy of the INI."""
    assert command[0] == "uwsgigw"
    return uwsgigw_cmd(*[ini if arg == IMAGE_INI else arg for arg in command[1:]])


def probe(command: list[str], ini: str) -> subprocess.CompletedProcess:
    return subprocess.run(image_command(command, ini), capture_output=True, text=True,
                          env=server_env(), timeout=30)


def test_container_ini_checks_clean(tmp_path):
    ini = local_ini(tmp_path, free_port())
    done = subprocess.run(uwsgigw_cmd("--ini", ini, "--check"), capture_output=True,
                          text=True, env=server_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr.lower(), done.stderr


def test_probe_commands_pass_against_the_server_and_fail_once_it_stops(tmp_path,
                                                                      uwsgigw_factory):
    port = free_port()
    ini = local_ini(tmp_path, port)
    server = uwsgigw_factory(*image_command(docker_cmd(), ini)[len(uwsgigw_cmd()):],
                             socket="127.0.0.1:%d" % port)
    commands = [docker_healthcheck(), *k8s_probe_commands().values()]
    for command in commands:
        done = probe(command, ini)
        assert done.returncode == 0 and done.stdout == "", (command, done.stderr)
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(30) == 0
    done = probe(docker_healthcheck(), ini)
    assert done.returncode == 1, done
    assert "127.0.0.1:%d" % port in done.stderr and "refused" in done.stderr.lower()


# -- as PID 1 -------------------------------------------------------------------------------

def unshare_prefix() -> list[str]:
    """``unshare`` options giving the command a PID namespace of its own
    (where it is PID 1), as root or through a user namespace."""
    for prefix in (["unshare", "--pid", "--fork", "--kill-child"],
                   ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child"]):
        try:
            done = subprocess.run(prefix + ["sh", "-c", "echo $$"], capture_output=True,
                                  text=True, timeout=30)
        except FileNotFoundError:
            break
        if done.returncode == 0 and done.stdout.strip() == "1":
            return prefix
    pytest.skip("cannot create a PID namespace here (unshare)")


class Pid1Server(UwsgigwProcess):
    """The command under ``unshare``: ``proc`` is unshare, whose only child
    is the uwsgigw master, PID 1 of the new namespace."""

    def __init__(self, prefix, args, socket_addr, log_path, env):
        self.args, self.socket, self.log_path = args, socket_addr, log_path
        self.cmd = prefix + uwsgigw_cmd(*args)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.pid = self.proc.pid

    def master_pid(self) -> int:
        """The master's pid as seen from here."""
        return wait_until(lambda: next(iter(children(self.proc.pid)), None), 10,
                          what="unshare's child")


def children(pid: int) -> list[int]:
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def proc_status(pid: int) -> dict[str, str]:
    try:
        with open("/proc/%d/status" % pid) as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except (FileNotFoundError, ProcessLookupError):
        return {}


def test_as_pid_1_it_answers_reaps_orphans_reloads_and_stops(tmp_path, factories):
    prefix = unshare_prefix()
    port = free_port()
    ini = local_ini(tmp_path, port)
    args = image_command(docker_cmd(), ini)[len(uwsgigw_cmd()):]
    server = Pid1Server(prefix, args, "127.0.0.1:%d" % port, str(tmp_path / "pid1.log"),
                        server_env())
    factories.servers.append(server)  # stopped (its process group) at teardown
    server.wait_ready()
    master = server.master_pid()
    assert proc_status(master)["NSpid"].split()[-1] == "1", proc_status(master)
    done = probe(docker_healthcheck(), ini)
    assert done.returncode == 0, done.stderr

    # A worker leaves an orphan (a shell that backgrounds a sleep and exits):
    # the kernel gives it to PID 1, the master, which must reap it when it ends.
    answer = uwsgi_request(server.socket, nginx_vars(uri="/orphan?0.5"))
    assert b" 200 " in answer.split(b"\r\n", 1)[0], answer

    def orphans() -> list[int]:
        return [p for p in children(master) if proc_status(p).get("Name") == "sleep"]

    orphan = wait_until(lambda: next(iter(orphans()), None), 10, what="the orphan under PID 1")
    wait_until(lambda: not proc_status(orphan), 15, what="the orphan reaped (no zombie left)")
    zombies = [p for p in children(master) if proc_status(p).get("State", "").startswith("Z")]
    assert not zombies

    # docker kill -s HUP: a graceful reload re-executes the master, still PID 1.
    mark = server.log_mark()
    os.kill(master, signal.SIGHUP)
    server.wait_for_log("reloaded in", since=mark, timeout=30)
    assert server.master_pid() == master and server.proc.poll() is None
    assert proc_status(master)["NSpid"].split()[-1] == "1"
    assert probe(docker_healthcheck(), ini).returncode == 0

    # docker stop / the kubelet: SIGTERM to PID 1 from outside its namespace.
    mark = server.log_mark()
    os.kill(master, signal.SIGTERM)
    assert server.proc.wait(30) == 0, server.log_text()  # unshare returns the master's status
    assert "SIGTERM: graceful stop" in server.log_since(mark)
