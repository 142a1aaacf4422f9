"""Test hosts booted with systemd-nspawn: boot, SSH, isolation, idempotence, reboot and teardown."""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import machine as machine_module
from sandbox.machine import Machine, MachineError, down, up

REPO_ROOT = Path(__file__).resolve().parent.parent
JSON_FIELDS = {
    "name",
    "ssh_host",
    "ssh_port",
    "ssh_user",
    "ssh_private_key",
    "leader_pid",
    "nspawn_pid",
    "root_cache",
    "upper_dir",
    "console_log",
}


def _machines_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "machine tests need root (systemd-nspawn, cgroups, nsenter)"
    missing = [tool for tool in ("systemd-nspawn", "debootstrap", "nsenter", "ssh") if shutil.which(tool) is None]
    if missing:
        return f"machine tests need {', '.join(missing)}; run `make setup`"
    return None


needs_machines = pytest.mark.skipif(_machines_unavailable() is not None, reason=_machines_unavailable() or "")


@pytest.fixture(scope="module")
def machine_env() -> Iterator[dict[str, str]]:
    """A private state dir under /tmp that shares the default root cache, so no test run rebuilds the root."""
    state_dir = tempfile.mkdtemp(prefix="machine-tests-", dir="/tmp")
    saved = {key: os.environ.get(key) for key in (machine_module.STATE_DIR_ENV, machine_module.ROOTS_DIR_ENV)}
    os.environ[machine_module.STATE_DIR_ENV] = state_dir
    os.environ.setdefault(machine_module.ROOTS_DIR_ENV, str(machine_module.DEFAULT_STATE_DIR / "roots"))
    try:
        yield {"state_dir": state_dir}
    finally:
        for state_file in sorted(Path(state_dir).glob("machines/*/state.json")):
            down(state_file.parent.name, state_dir)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(state_dir)


def unique_name(purpose: str) -> str:
    """Machine names are host-wide (cgroup dirs), so every run uses fresh ones."""
    return f"mt-{secrets.token_hex(3)}-{purpose}"


@pytest.fixture(scope="module")
def booted(machine_env: dict[str, str]) -> Machine:
    return up(unique_name("main"), state_dir=machine_env["state_dir"])


def run_cli(*arguments: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "sandbox.machine", *arguments],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=240,
    )


def wait_for_new_leader(name: str, state_dir: str, old_leader: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = machine_module.info(name, state_dir)
        if current is not None and current.leader_pid not in {None, old_leader}:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} got no new PID 1 within {timeout} s")


# ----------------------------------------------------------------------------------------------------------------
# Without machines


@pytest.mark.parametrize("name", ["web", "a", "bot-1", "a" + "b" * 30])
def test_valid_names_are_accepted(name: str) -> None:
    """Names of a lowercase letter then up to 30 lowercase letters, digits or dashes are valid."""
    assert machine_module.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Web", "1web", "-web", "web_1", "web.1", "a" + "b" * 31, "../etc"])
def test_invalid_names_are_refused_with_the_rule(name: str) -> None:
    """An invalid name raises an error that quotes the name and states the rule."""
    with pytest.raises(MachineError, match=r"invalid machine name .*lowercase letter first"):
        machine_module.validate_name(name)


def test_ssh_args_log_in_as_root_with_the_key() -> None:
    """ssh_args is the exact ssh command line for key-only root login on the machine's port."""
    record = Machine("web", "127.0.0.1", 2222, "root", "/k/id", 10, 9, "/r", "/u", "/c")
    assert record.ssh_args() == [
        "ssh",
        "-i",
        "/k/id",
        "-p",
        "2222",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "root@127.0.0.1",
    ]


def test_root_cache_key_follows_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Changing the package list or the recipe version names a different root cache directory."""
    paths = machine_module.StatePaths(Path("/s"), Path("/s/roots"))
    original = machine_module.root_cache_path(paths)
    assert machine_module.root_cache_path(paths) == original
    monkeypatch.setattr(machine_module, "ROOT_PACKAGES", (*machine_module.ROOT_PACKAGES, "curl"))
    with_curl = machine_module.root_cache_path(paths)
    monkeypatch.setattr(machine_module, "ROOT_RECIPE_VERSION", machine_module.ROOT_RECIPE_VERSION + 1)
    assert len({original, with_curl, machine_module.root_cache_path(paths)}) == 3


def test_removal_unlinks_symlinks_without_following_them(tmp_path: Path) -> None:
    """Removing a tree deletes its files and dirs but only unlinks a symlink, never what it points to."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "file").write_text("x")
    (tree / "a" / "link").symlink_to(outside)
    machine_module._remove_tree(tree)
    assert not tree.exists()
    assert (outside / "keep").read_text() == "x"


@needs_machines
def test_removal_unmounts_instead_of_deleting_through_a_mount(tmp_path: Path) -> None:
    """A bind mount left inside a tree (as a killed debootstrap leaves /dev) is detached, its source untouched."""
    source = tmp_path / "host-dev"
    source.mkdir()
    (source / "node").write_text("x")
    tree = tmp_path / "half-built-root"
    (tree / "dev").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(source), str(tree / "dev")], check=True)
    try:
        machine_module._remove_tree(tree)
    finally:
        subprocess.run(["umount", str(tree / "dev")], check=False, capture_output=True)
    assert not tree.exists()
    assert (source / "node").read_text() == "x"


@pytest.mark.skipif(os.geteuid() != 0, reason="building a root needs root")
def test_failed_root_build_leaves_no_half_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed debootstrap leaves no cache and no build dir, its error quotes the log; dead builds are swept."""
    fake_debootstrap = tmp_path / "bin" / "debootstrap"
    fake_debootstrap.parent.mkdir()
    # Arguments: --variant --components --include SUITE TARGET MIRROR; half-populate the target, then fail.
    fake_debootstrap.write_text('#!/bin/sh\nmkdir -p "$5/etc"\necho "E: simulated mirror failure"\nexit 1\n')
    fake_debootstrap.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_debootstrap.parent}:{os.environ['PATH']}")
    monkeypatch.setenv(machine_module.ROOTS_DIR_ENV, str(tmp_path / "roots"))
    paths = machine_module.StatePaths.resolve(tmp_path / "state")
    root = machine_module.root_cache_path(paths)
    # No PID can be this large (pid_max is at most 2**22), so this build's owner is surely dead.
    dead_build = paths.roots_dir / f".build-{root.name}-99999999"
    (dead_build / "etc").mkdir(parents=True)
    with pytest.raises(MachineError, match=r"(?s)debootstrap failed \(exit 1\).*simulated mirror failure"):
        machine_module.build_root(tmp_path / "state")
    assert not root.exists()
    assert [path.name for path in paths.roots_dir.iterdir() if path.is_dir()] == []


# ----------------------------------------------------------------------------------------------------------------
# With machines


@pytest.mark.machine
@needs_machines
def test_machine_boots_to_running(booted: Machine) -> None:
    """A fresh machine finishes booting with every unit fine: systemctl is-system-running says running."""
    state = booted.exec(["systemctl", "is-system-running", "--wait"], check=False, timeout=120).stdout.strip()
    failed = booted.exec(["systemctl", "--failed", "--no-legend", "--plain"], check=False).stdout.strip()
    assert state == "running", f"system state {state!r}; failed units:\n{failed}"


@pytest.mark.machine
@needs_machines
def test_ssh_accepts_only_the_key(booted: Machine) -> None:
    """Root logs in over SSH with the state dir's key, while password login is refused."""
    assert booted.run("id -un").stdout.strip() == "root"
    password_attempt = subprocess.run(
        [
            "ssh",
            "-p",
            str(booted.ssh_port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "root@127.0.0.1",
            "true",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert password_attempt.returncode == 255
    assert "Permission denied" in password_attempt.stderr


@pytest.mark.machine
@needs_machines
def test_only_sshd_listens_and_only_on_its_loopback_port(booted: Machine) -> None:
    """The machine shares the host network, so its one listening socket is sshd on 127.0.0.1:<its port>."""
    # ss inside the machine sees every host socket but names only the processes of the machine's PID namespace.
    listing = booted.exec(["ss", "-H", "-l", "-t", "-u", "-n", "-p"]).stdout.splitlines()
    ours = [line.split() for line in listing if "users:" in line]
    assert [(fields[0], fields[4]) for fields in ours] == [("tcp", f"127.0.0.1:{booted.ssh_port}")], listing
    assert '"sshd"' in ours[0][-1]


@pytest.mark.machine
@needs_machines
def test_python_is_3_11(booted: Machine) -> None:
    """The machine's python3 is 3.11, the version ansible-core 2.19 and the bot target."""
    assert booted.run("python3 -c 'import sys; print(sys.version_info[:2])'").stdout.strip() == "(3, 11)"


@pytest.mark.machine
@needs_machines
def test_machine_reaches_package_registries(booted: Machine) -> None:
    """apt-get update and pip download work inside the machine through the host's resolver, proxy CA and pip config."""
    apt = booted.run("apt-get update -q", check=False, timeout=240)
    assert apt.returncode == 0, apt.stdout[-2000:] + apt.stderr[-2000:]
    pip = booted.run(
        "python3 -m venv /tmp/pip-check && /tmp/pip-check/bin/pip download -q --no-deps -d /tmp/pip-check/d six",
        check=False,
        timeout=240,
    )
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    assert booted.run("ls /tmp/pip-check/d").stdout.startswith("six-")


@pytest.mark.machine
@needs_machines
def test_ip_address_deny_is_enforced(booted: Machine) -> None:
    """A unit with IPAddressDeny=any cannot connect to 127.0.0.1 while an unrestricted unit can."""
    address = f"('127.0.0.1', {booted.ssh_port})"
    connect = f"import socket; socket.create_connection({address}, timeout=3).close(); print('connected')"

    def connect_from_unit(*properties: str) -> subprocess.CompletedProcess[str]:
        return booted.exec(
            ["systemd-run", "--quiet", "--wait", "--pipe", *properties, "python3", "-c", connect],
            check=False,
            timeout=60,
        )

    restricted = connect_from_unit("--property=IPAddressDeny=any")
    unrestricted = connect_from_unit()
    assert unrestricted.returncode == 0 and "connected" in unrestricted.stdout, unrestricted.stderr
    assert restricted.returncode != 0 and "connected" not in restricted.stdout


@pytest.mark.machine
@needs_machines
def test_up_twice_is_idempotent(booted: Machine, machine_env: dict[str, str]) -> None:
    """A second `up` of a running machine returns the same machine without booting it again."""
    again = run_cli("up", booted.name, "--state-dir", machine_env["state_dir"])
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) == JSON_FIELDS
    assert record == json.loads(booted.to_json())
    listed = [json.loads(line) for line in run_cli("list", "--state-dir", machine_env["state_dir"]).stdout.splitlines()]
    assert record in listed


@pytest.mark.machine
@needs_machines
def test_cli_runs_with_the_system_python(booted: Machine, machine_env: dict[str, str]) -> None:
    """The tool needs only the standard library: the system python3 runs info and exec."""
    system_python = "/usr/bin/python3"
    if not Path(system_python).exists():
        pytest.skip("no system python3 at /usr/bin/python3")
    info = run_cli("info", booted.name, "--state-dir", machine_env["state_dir"], python=system_python)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["leader_pid"] == booted.leader_pid
    status = run_cli(
        "exec", booted.name, "--state-dir", machine_env["state_dir"], "--", "sh", "-c", "exit 7", python=system_python
    )
    assert status.returncode == 7


@pytest.mark.machine
@needs_machines
def test_parallel_machines_are_separate(machine_env: dict[str, str]) -> None:
    """Two machines booted at the same time get their own machine ids, host keys and ports, and both work."""
    names = [unique_name("left"), unique_name("right")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        machines = list(pool.map(lambda name: up(name, state_dir=machine_env["state_dir"]), names))
    try:
        ids = [m.run("cat /etc/machine-id").stdout.strip() for m in machines]
        host_keys = [m.run("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1] for m in machines]
        hostnames = [m.run("hostname").stdout.strip() for m in machines]
        assert ids[0] != ids[1] and all(len(machine_id) == 32 for machine_id in ids)
        assert host_keys[0] != host_keys[1]
        assert machines[0].ssh_port != machines[1].ssh_port
        assert hostnames == names
    finally:
        for name in names:
            down(name, machine_env["state_dir"])


@pytest.mark.machine
@needs_machines
def test_down_leaves_nothing_behind(machine_env: dict[str, str]) -> None:
    """down powers the machine off and removes its processes, cgroup dirs and upper dir; a second down is fine."""
    state_dir = machine_env["state_dir"]
    started = up(unique_name("down"), state_dir=state_dir)
    cgroups = machine_module._cgroup_dirs(started.name)
    assert all(directory.is_dir() for directory in cgroups)
    result = run_cli("down", started.name, "--state-dir", state_dir)
    assert result.returncode == 0, result.stderr
    assert not machine_module._is_alive(started.leader_pid)
    assert not machine_module._is_alive(started.nspawn_pid)
    assert not any(directory.exists() for directory in cgroups)
    assert not Path(started.upper_dir).exists()
    assert run_cli("info", started.name, "--state-dir", state_dir).returncode == 1
    assert started.name not in run_cli("list", "--state-dir", state_dir).stdout
    assert run_cli("down", started.name, "--state-dir", state_dir).returncode == 0


@pytest.mark.machine
@needs_machines
def test_reboot_from_inside_comes_back(booted: Machine, machine_env: dict[str, str]) -> None:
    """`systemctl reboot` inside brings the machine back with SSH, a new PID 1 and its disk kept."""
    state_dir = machine_env["state_dir"]
    machine_id = booted.run("echo kept > /root/reboot-marker && cat /etc/machine-id").stdout.strip()
    booted.exec(["systemctl", "reboot"])
    wait_for_new_leader(booted.name, state_dir, booted.leader_pid)
    back = up(booted.name, state_dir=state_dir)
    assert back.leader_pid != booted.leader_pid
    assert back.run("cat /root/reboot-marker /etc/machine-id").stdout.split() == ["kept", machine_id]
    assert back.exec(["systemctl", "is-system-running", "--wait"], check=False, timeout=120).stdout.strip() == "running"

    rebooted = run_cli("reboot", booted.name, "--state-dir", state_dir)
    assert rebooted.returncode == 0, rebooted.stderr
    after_cli = json.loads(rebooted.stdout)
    assert after_cli["leader_pid"] not in {back.leader_pid, None}
    assert machine_module.info(booted.name, state_dir).run("true").returncode == 0
    # A Machine recorded before the reboots finds the new PID 1 by itself.
    assert booted.exec(["cat", "/root/reboot-marker"]).stdout.strip() == "kept"
    assert booted.leader_pid == after_cli["leader_pid"]


@pytest.mark.machine
@needs_machines
def test_up_replaces_a_half_dead_machine_with_a_note(machine_env: dict[str, str]) -> None:
    """If the supervisor died, `up` notes the stale machine in one line, cleans it up and boots a fresh one."""
    state_dir = machine_env["state_dir"]
    first = up(unique_name("stale"), state_dir=state_dir)
    supervisor = json.loads((Path(first.upper_dir).parent / "supervisor.json").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    assert machine_module._wait_until(lambda: machine_module.info(first.name, state_dir) is None, 10)
    assert machine_module._is_alive(first.leader_pid), "the machine itself must outlive its supervisor here"
    again = run_cli("up", first.name, "--state-dir", state_dir)
    assert again.returncode == 0, again.stderr
    notes = [line for line in again.stderr.splitlines() if line.startswith("note: cleaning up stale machine")]
    assert len(notes) == 1, again.stderr
    second = Machine(**json.loads(again.stdout))
    assert second.leader_pid != first.leader_pid
    assert not machine_module._is_alive(first.leader_pid)
    assert second.run("true").returncode == 0
    down(first.name, state_dir)


@pytest.mark.machine
@needs_machines
def test_cli_refuses_a_bad_name(machine_env: dict[str, str]) -> None:
    """up with an invalid name exits 1 and says what a valid name looks like, without booting anything."""
    result = run_cli("up", "Bad_Name", "--state-dir", machine_env["state_dir"])
    assert result.returncode == 1
    assert "invalid machine name 'Bad_Name'" in result.stderr
    assert "^[a-z][a-z0-9-]{0,30}$" in result.stderr
    assert not (Path(machine_env["state_dir"]) / "machines" / "Bad_Name").exists()


@pytest.mark.machine
@needs_machines
def test_up_timeout_names_the_problem_and_shows_the_console(machine_env: dict[str, str]) -> None:
    """When SSH does not answer in time, up exits 1 saying so and quoting the console log's path and last lines."""
    state_dir = machine_env["state_dir"]
    name = unique_name("slow")
    try:
        result = run_cli("up", name, "--state-dir", state_dir, "--timeout", "0")
        assert result.returncode == 1
        assert f"machine {name} did not accept SSH" in result.stderr
        assert f"last lines of {state_dir}/machines/{name}/console.log" in result.stderr
        assert result.stdout == ""
    finally:
        down(name, state_dir)
