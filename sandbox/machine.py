"""Debian 12 test machines booted with systemd-nspawn and reachable over SSH on 127.0.0.1.

A machine is a full systemd boot of a cached debootstrapped root, mounted read-only as the lower layer of an
overlay whose upper layer is the machine's own disk. Machines share the host's network namespace, so each
machine's sshd listens only on 127.0.0.1:<its port>. The host need not run systemd: every machine is driven by
a detached supervisor process (tracked by PID) that restarts systemd-nspawn when the machine reboots.

Only the Python standard library is used, so this runs with the system python3 as well as a virtualenv.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/discord-bot-sandbox")
STATE_DIR_ENV = "SANDBOX_STATE_DIR"
# Lets test runs keep their machines apart from the sandbox's while sharing its slow-to-build root cache.
ROOTS_DIR_ENV = "SANDBOX_ROOTS_DIR"

# Bump when anything about how the root is built or customised changes: it is part of the cache key.
ROOT_RECIPE_VERSION = 1
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
ROOT_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    # ansible-core 2.19's pip module imports it on the managed host.
    "python3-packaging",
    "python3-venv",
    "sudo",
    "ca-certificates",
    "iproute2",
    "procps",
    "less",
)
# Units that would fight the host whose network namespace the machines share, wait for a console nobody
# watches, or wake up at random times and make runs irreproducible. Masked rather than disabled because a
# first boot applies presets, which would enable disabled units again.
MASKED_UNITS = (
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
    "systemd-network-generator.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
    "systemd-firstboot.service",
    "console-getty.service",
    "container-getty@.service",
    "getty@.service",
    "serial-getty@.service",
    "getty-static.service",
    "ssh.socket",
    "apt-daily.timer",
    "apt-daily.service",
    "apt-daily-upgrade.timer",
    "apt-daily-upgrade.service",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
)
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
# Host pip configuration that makes pip reach PyPI through this host's proxy; copied into every machine.
HOST_PIP_CONFIG_PATHS = (Path("/etc/pip.conf"), Path("/etc/xdg/pip"))

MACHINE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
SSH_HOST = "127.0.0.1"
SSH_USER = "root"
# Outside Linux's default ephemeral range (32768-60999), so an outgoing connection cannot take the port
# between choosing it and sshd binding it.
SSH_PORT_RANGE = (20000, 32000)
NSPAWN_REBOOT_EXIT_CODE = 133
DEFAULT_BOOT_TIMEOUT = 120.0
DEFAULT_POWEROFF_TIMEOUT = 30.0
MACHINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONSOLE_TAIL_LINES = 25
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class MachineError(RuntimeError):
    """A machine could not be built, booted, reached or stopped; the message says what to do."""


def _note(message: str) -> None:
    """Tell the operator something on stderr, keeping stdout for the JSON other tools parse."""
    sys.stderr.write(f"note: {message}\n")
    sys.stderr.flush()


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _console(message: str) -> None:
    """Write a line into the machine's console log (the supervisor's stdout), marked as ours."""
    sys.stdout.write(f"sandbox: {message}\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------------------------------
# Paths and state


@dataclasses.dataclass(frozen=True)
class StatePaths:
    """Where a state dir keeps the root cache, the SSH key and each machine's files."""

    state_dir: Path
    roots_dir: Path

    @classmethod
    def resolve(cls, state_dir: str | os.PathLike[str] | None) -> StatePaths:
        chosen = Path(state_dir or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR).absolute()
        roots = os.environ.get(ROOTS_DIR_ENV)
        return cls(state_dir=chosen, roots_dir=Path(roots).absolute() if roots else chosen / "roots")

    @property
    def machines_dir(self) -> Path:
        return self.state_dir / "machines"

    @property
    def private_key(self) -> Path:
        return self.state_dir / "ssh" / "id_ed25519"

    def machine_dir(self, name: str) -> Path:
        return self.machines_dir / name


@dataclasses.dataclass(frozen=True)
class MachinePaths:
    """The files of one machine below `machines/<name>/`."""

    directory: Path

    @property
    def upper(self) -> Path:
        return self.directory / "upper"

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    @property
    def previous_console_log(self) -> Path:
        return self.directory / "console.previous.log"

    @property
    def supervisor_file(self) -> Path:
        return self.directory / "supervisor.json"

    @property
    def stop_request(self) -> Path:
        return self.directory / "stop-requested"

    @property
    def lock_file(self) -> Path:
        return self.directory / ".lock"


def validate_name(name: str) -> str:
    """Return `name` if it is a valid machine name, else raise MachineError saying what a valid one looks like."""
    if not isinstance(name, str) or not MACHINE_NAME_PATTERN.fullmatch(name):
        raise MachineError(
            f"invalid machine name {name!r}: use 1 to 31 characters, a lowercase letter first, then lowercase "
            f"letters, digits or '-' (pattern {MACHINE_NAME_PATTERN.pattern})"
        )
    return name


def _write_json_atomically(path: Path, data: dict[str, object]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise MachineError(f"{path} is not valid JSON ({error}); delete it to start that machine afresh") from error


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _require_root_and_tools(*tools: str) -> None:
    if os.geteuid() != 0:
        raise MachineError("machines need root (systemd-nspawn, cgroups, nsenter): run this as root")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise MachineError(f"missing host tools: {', '.join(missing)}; run `make setup` to install them")


# ----------------------------------------------------------------------------------------------------------------
# Processes


def _process_stat(pid: int) -> tuple[str, int, int] | None:
    """Return (state, parent pid, start time in clock ticks) of `pid`, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _is_alive(pid: int | None, start_time: int | None = None) -> bool:
    """True if `pid` runs (zombies count as dead) and, when given, started at `start_time` (guards PID reuse)."""
    if not pid:
        return False
    stat = _process_stat(pid)
    if stat is None or stat[0] in {"Z", "X"}:
        return False
    return start_time is None or stat[2] == start_time


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    # Kernels without CONFIG_PROC_CHILDREN: scan every process for its parent.
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _process_stat(int(entry.name))
            if stat is not None and stat[1] == pid:
                found.append(int(entry.name))
    return found


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _container_leader(nspawn_pid: int) -> int | None:
    """The container's PID 1: the child of systemd-nspawn that lives in a PID namespace of its own."""
    nspawn_namespace = _pid_namespace(nspawn_pid)
    for child in _children(nspawn_pid):
        namespace = _pid_namespace(child)
        if namespace is not None and namespace != nspawn_namespace and _is_alive(child):
            return child
    return None


def _nspawn_and_leader(supervisor_pid: int) -> tuple[int | None, int | None]:
    """Find the supervisor's systemd-nspawn child and the container's PID 1."""
    children = _children(supervisor_pid)
    nspawn_pid = next((child for child in children if _command_name(child) == "systemd-nspawn"), None)
    if nspawn_pid is None:
        return None, None
    return nspawn_pid, _container_leader(nspawn_pid)


def _signal(pid: int | None, signum: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# ----------------------------------------------------------------------------------------------------------------
# Cgroups


def _mounts() -> list[tuple[Path, str, str]]:
    """(mount point, file system type, super options) of every mount this process sees."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        # mountinfo writes space, tab, newline and backslash in paths as octal escapes.
        mount_point = re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), before.split()[4])
        fstype, _source, options = [*after.split(), "", "", ""][:3]
        mounts.append((Path(mount_point), fstype, options))
    return mounts


def _cgroup_hierarchies() -> list[Path]:
    """The cgroup mounts each machine needs its own directory in: the unified one and, on hybrid hosts, name=systemd."""
    unified = next((point for point, fstype, _options in _mounts() if fstype == "cgroup2"), None)
    if unified is None:
        raise MachineError("no cgroup2 (unified) hierarchy is mounted on this host; systemd in the machines needs one")
    named_systemd = next(
        (point for point, fstype, options in _mounts() if fstype == "cgroup" and "name=systemd" in options.split(",")),
        None,
    )
    return [unified] if named_systemd is None else [unified, named_systemd]


def _cgroup_dirs(name: str) -> list[Path]:
    return [hierarchy / name for hierarchy in _cgroup_hierarchies()]


def _cgroup_processes(directory: Path) -> list[int]:
    pids: list[int] = []
    if not directory.is_dir():
        return pids
    for current, _subdirs, _files in os.walk(directory):
        with contextlib.suppress(FileNotFoundError):
            pids.extend(int(pid) for pid in (Path(current) / "cgroup.procs").read_text().split())
    return pids


def _remove_cgroup(directory: Path) -> None:
    """Remove a cgroup directory tree (leaves first); it must be empty of processes."""
    if not directory.is_dir():
        return
    for current, _subdirs, _files in os.walk(directory, topdown=False):
        try:
            os.rmdir(current)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise MachineError(
                f"cannot remove cgroup {current}: {error}; processes still in it: {_cgroup_processes(Path(current))}"
            ) from error


# ----------------------------------------------------------------------------------------------------------------
# Safe removal


def _mount_points_below(directory: Path) -> list[Path]:
    """Mount points at or below `directory`, deepest first (the order to unmount them in)."""
    resolved = directory.resolve()
    found = [point for point, _fstype, _options in _mounts() if point == resolved or resolved in point.parents]
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def _remove_tree(directory: Path) -> None:
    """Delete `directory`, first unmounting anything below it and never following a mount into another file system.

    A killed debootstrap can leave /proc, /sys or a bind of /dev mounted inside its target; a plain rmtree
    there would try to delete the host's device nodes.
    """
    if directory.is_symlink():
        directory.unlink()
        return
    if not directory.exists():
        return
    for mount_point in _mount_points_below(directory):
        # umount(8) is the only stdlib-reachable way to detach a mount; a lazy detach cannot hang on busy mounts.
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False, capture_output=True)  # noqa: S603, S607
    if _mount_points_below(directory):
        raise MachineError(f"{directory} still has mounts below it; unmount them, then remove it by hand")
    # Check every directory before deleting anything: a mount that escaped the mountinfo check must stop us.
    top_device = directory.lstat().st_dev
    for current, subdirs, _files in os.walk(directory):
        for subdir in subdirs:
            path = Path(current, subdir)
            if not path.is_symlink() and path.lstat().st_dev != top_device:
                raise MachineError(f"refusing to remove {directory}: {path} is on another file system")
    for current, subdirs, files in os.walk(directory, topdown=False):
        for file_name in files:
            Path(current, file_name).unlink(missing_ok=True)
        for subdir in subdirs:
            path = Path(current, subdir)
            if path.is_symlink():
                path.unlink()
            else:
                path.rmdir()
    directory.rmdir()


# ----------------------------------------------------------------------------------------------------------------
# Root cache


def _host_ca_certificates() -> list[Path]:
    if not HOST_CA_DIR.is_dir():
        return []
    return sorted(path for path in HOST_CA_DIR.rglob("*.crt") if path.is_file())


def root_recipe() -> dict[str, object]:
    """Everything the cached root depends on; its hash names the cache directory."""
    certificates = {
        str(path.relative_to(HOST_CA_DIR)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in _host_ca_certificates()
    }
    return {
        "version": ROOT_RECIPE_VERSION,
        "suite": DEBIAN_SUITE,
        "mirror": DEBIAN_MIRROR,
        "packages": sorted(ROOT_PACKAGES),
        "masked_units": sorted(MASKED_UNITS),
        "host_ca_certificates": certificates,
    }


def root_cache_path(paths: StatePaths) -> Path:
    digest = hashlib.sha256(json.dumps(root_recipe(), sort_keys=True).encode()).hexdigest()[:16]
    return paths.roots_dir / digest


SSH_HOST_KEYS_UNIT = """\
[Unit]
Description=Generate this machine's own SSH host keys on its first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
"""

SSHD_AUTH_CONFIG = """\
# Root logs in with the sandbox's key only; the listen address is set per machine in 00-sandbox-listen.conf.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


def _apt_sources() -> str:
    return (
        f"Types: deb\nURIs: {DEBIAN_MIRROR}\nSuites: {DEBIAN_SUITE} {DEBIAN_SUITE}-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {DEBIAN_SECURITY_MIRROR}\nSuites: {DEBIAN_SUITE}-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


def _customise_root(root: Path) -> None:
    """Turn a fresh debootstrap into a root that boots cleanly as many machines at once."""
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(_apt_sources())

    ca_dir = root / "usr/local/share/ca-certificates"
    ca_dir.mkdir(parents=True, exist_ok=True)
    for certificate in _host_ca_certificates():
        target = ca_dir / certificate.relative_to(HOST_CA_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(certificate, target)
    # update-ca-certificates must run with the root's own paths and openssl; chroot is the plain way to do that.
    result = subprocess.run(  # noqa: S603
        ["chroot", str(root), "update-ca-certificates", "--fresh"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise MachineError(f"update-ca-certificates failed in the new root: {result.stderr.strip()}")

    # Host keys must differ per machine: they are generated at first boot by sandbox-ssh-host-keys.service.
    for host_key in (root / "etc/ssh").glob("ssh_host_*"):
        host_key.unlink()
    (root / "etc/ssh/sshd_config.d/10-sandbox-auth.conf").write_text(SSHD_AUTH_CONFIG)
    units = root / "etc/systemd/system"
    (units / "sandbox-ssh-host-keys.service").write_text(SSH_HOST_KEYS_UNIT)
    wants = units / "ssh.service.wants"
    wants.mkdir(exist_ok=True)
    (wants / "sandbox-ssh-host-keys.service").symlink_to("/etc/systemd/system/sandbox-ssh-host-keys.service")
    for unit in MASKED_UNITS:
        mask = units / unit
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")

    # An empty machine-id makes systemd generate a new one on each machine's first boot. systemd falls back to
    # D-Bus's copy when /etc/machine-id is empty, so that copy must point back at it rather than hold the old id.
    (root / "etc/machine-id").write_text("")
    dbus_machine_id = root / "var/lib/dbus/machine-id"
    dbus_machine_id.unlink(missing_ok=True)
    dbus_machine_id.parent.mkdir(parents=True, exist_ok=True)
    dbus_machine_id.symlink_to("/etc/machine-id")

    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    ssh_dir.chmod(0o700)

    # Package lists and downloaded .debs would be stale soon and only bloat the cache; machines run apt-get update.
    for leftover in (root / "var/cache/apt/archives").glob("*.deb"):
        leftover.unlink()
    for leftover in (root / "var/cache/apt").glob("*.bin"):
        leftover.unlink()
    for leftover in (root / "var/lib/apt/lists").iterdir():
        if leftover.is_file() and leftover.name != "lock":
            leftover.unlink()
    (root / "etc/discord-bot-sandbox-root.json").write_text(json.dumps(root_recipe(), indent=2, sort_keys=True))


def _nspawn_processes_using(root: Path) -> list[int]:
    needle = f"\0--directory={root}\0".encode()
    users = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"systemd-nspawn" in command_line and needle in command_line:
            users.append(int(entry.name))
    return users


def _debootstrap(target: Path, log_path: Path) -> None:
    with log_path.open("w") as log:
        result = subprocess.run(  # noqa: S603
            [  # noqa: S607
                "debootstrap",
                "--variant=minbase",
                "--components=main",
                f"--include={','.join(ROOT_PACKAGES)}",
                DEBIAN_SUITE,
                str(target),
                DEBIAN_MIRROR,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise MachineError(
            f"debootstrap failed (exit {result.returncode}); last lines of {log_path}:\n{_tail(log_path)}"
        )


def build_root(state_dir: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """Return the cached root for the current recipe, building it first if it is missing (or if `force`)."""
    _require_root_and_tools("debootstrap", "chroot")
    paths = StatePaths.resolve(state_dir)
    root = root_cache_path(paths)
    paths.roots_dir.mkdir(parents=True, exist_ok=True)
    with _locked(paths.roots_dir / f".{root.name}.lock"):
        if root.is_dir() and not force:
            return root
        # Left behind by builds that were killed; the PID suffix says whether their builder still runs.
        stale_dirs = [*paths.roots_dir.glob(f".build-{root.name}-*"), *paths.roots_dir.glob(f".retired-{root.name}-*")]
        for stale in (path for path in stale_dirs if path.is_dir()):
            owner = stale.name.rsplit("-", 1)[-1]
            if not (owner.isdigit() and _is_alive(int(owner))):
                _remove_tree(stale)
        if root.is_dir():
            users = _nspawn_processes_using(root)
            if users:
                raise MachineError(
                    f"cannot rebuild {root}: machines run on it (systemd-nspawn PIDs {users}); `down` them first"
                )
        build_dir = paths.roots_dir / f".build-{root.name}-{os.getpid()}"
        log_path = paths.roots_dir / f".build-{root.name}.log"
        _note(f"building the machine root {root} with debootstrap (about 70 s)")
        started = time.monotonic()
        try:
            _debootstrap(build_dir, log_path)
            _customise_root(build_dir)
            if _mount_points_below(build_dir):
                raise MachineError(f"debootstrap left mounts below {build_dir}; refusing to cache it")
        except BaseException:
            # Also on Ctrl-C: the cache must only ever see complete roots, and a half one is 200 MB of litter.
            _remove_tree(build_dir)
            raise
        if root.is_dir():
            retired = paths.roots_dir / f".retired-{root.name}-{os.getpid()}"
            os.rename(root, retired)
            os.rename(build_dir, root)
            _remove_tree(retired)
        else:
            os.rename(build_dir, root)
        _note(f"built {root} in {time.monotonic() - started:.0f} s")
        return root


# ----------------------------------------------------------------------------------------------------------------
# The machine record


@dataclasses.dataclass
class Machine:
    """A running machine, as `up` prints it."""

    name: str
    ssh_host: str
    ssh_port: int
    ssh_user: str
    ssh_private_key: str
    leader_pid: int | None
    nspawn_pid: int | None
    root_cache: str
    upper_dir: str
    console_log: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    def ssh_args(self) -> list[str]:
        """The ssh command line, without a remote command, that logs in to this machine as root."""
        return [
            "ssh",
            "-i",
            self.ssh_private_key,
            "-p",
            str(self.ssh_port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"{self.ssh_user}@{self.ssh_host}",
        ]

    def run(self, cmd: str, check: bool = True, timeout: float | None = 300) -> subprocess.CompletedProcess[str]:
        """Run the shell command `cmd` in the machine over SSH and capture its output as text."""
        return subprocess.run(  # noqa: S603
            [*self.ssh_args(), cmd], capture_output=True, text=True, check=check, timeout=timeout
        )

    def exec(
        self, argv: Sequence[str], check: bool = True, timeout: float | None = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the machine via nsenter (no SSH needed) and capture its output as text.

        After a reboot the recorded PID 1 is gone; the current one is looked up (and recorded) then.
        """
        if not _is_alive(self.leader_pid):
            # upper_dir is <state dir>/machines/<name>/upper.
            current = info(self.name, Path(self.upper_dir).parent.parent.parent)
            self.leader_pid, self.nspawn_pid = (current.leader_pid, current.nspawn_pid) if current else (None, None)
        if not self.leader_pid:
            raise MachineError(f"machine {self.name} has no running PID 1 right now (rebooting?); retry shortly")
        return subprocess.run(  # noqa: S603
            _nsenter_argv(self.leader_pid, argv), capture_output=True, text=True, check=check, timeout=timeout
        )


def _nsenter_argv(leader_pid: int, argv: Sequence[str]) -> list[str]:
    if not argv:
        raise MachineError("no command given to run inside the machine")
    environment = ["PATH=" + MACHINE_PATH, "HOME=/root", "LANG=C.UTF-8", "USER=root", "LOGNAME=root"]
    if os.environ.get("TERM"):
        environment.append("TERM=" + os.environ["TERM"])
    # The host's environment (virtualenv PATH, proxies, CA variables) must not leak into the machine.
    return ["nsenter", f"--target={leader_pid}", "--all", "--", "/usr/bin/env", "-i", *environment, *argv]


# ----------------------------------------------------------------------------------------------------------------
# Booting


def _tail(path: Path, lines: int = CONSOLE_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no output)"
    clean = [ANSI_ESCAPE.sub("", line.rstrip("\r")) for line in text.splitlines()]
    return "\n".join(clean[-lines:]) or "(no output)"


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((SSH_HOST, port))
        except OSError:
            return False
    return True


def _ports_remembered(paths: StatePaths, except_name: str) -> set[int]:
    ports = set()
    for state_file in paths.machines_dir.glob("*/state.json"):
        if state_file.parent.name == except_name:
            continue
        with contextlib.suppress(MachineError, TypeError, ValueError):
            state = _read_json(state_file) or {}
            ports.add(int(state.get("ssh_port") or 0))
    return ports


def _choose_port(paths: StatePaths, name: str, requested: int | None, remembered: int | None) -> int:
    if requested is not None:
        if not 1 <= requested <= 65535:
            raise MachineError(f"--ssh-port {requested} is not a TCP port (1-65535)")
        if not _port_is_free(requested):
            raise MachineError(f"port {requested} on {SSH_HOST} is in use; pass a free --ssh-port or omit it")
        return requested
    if remembered and _port_is_free(remembered):
        return remembered
    if remembered:
        _note(f"port {remembered} remembered for {name} is in use now; choosing another")
    taken = _ports_remembered(paths, name)
    candidates = list(range(*SSH_PORT_RANGE))
    # Shuffled so that parallel runs spread over the range instead of racing for its first port.
    random.shuffle(candidates)
    for port in candidates:
        if port not in taken and _port_is_free(port):
            return port
    raise MachineError(f"no free port on {SSH_HOST} in {SSH_PORT_RANGE}; pass --ssh-port")


def ensure_ssh_key(paths: StatePaths) -> Path:
    """Return the state dir's private key, generating the ed25519 pair (no passphrase) on first use."""
    key = paths.private_key
    key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(key.parent / ".lock"):
        if not key.exists() or not key.with_suffix(".pub").exists():
            key.unlink(missing_ok=True)
            key.with_suffix(".pub").unlink(missing_ok=True)
            # ssh-keygen is the standard way to produce an OpenSSH key; the stdlib has no ed25519.
            subprocess.run(  # noqa: S603
                [  # noqa: S607
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "discord-bot-sandbox",
                    "-f",
                    str(key),
                ],
                check=True,
                capture_output=True,
            )
    return key


def _write_into_upper(root: Path, upper: Path, relative: str, content: bytes, mode: int) -> None:
    """Create a file in the machine's upper layer; new parent dirs copy the lower layer's owner and mode.

    In an overlay the upper copy of a directory decides its attributes, so a parent created with default
    permissions would, for example, open up /root or /root/.ssh.
    """
    target = upper / relative
    for depth in range(1, len(Path(relative).parts)):
        part = Path(*Path(relative).parts[:depth])
        upper_dir = upper / part
        if upper_dir.is_dir():
            continue
        upper_dir.mkdir()
        lower_dir = root / part
        if lower_dir.is_dir() and not lower_dir.is_symlink():
            status = lower_dir.stat()
            os.chown(upper_dir, status.st_uid, status.st_gid)
            upper_dir.chmod(status.st_mode & 0o7777)
        else:
            upper_dir.chmod(0o755)
    target.write_bytes(content)
    target.chmod(mode)


def _host_apt_acquire_overrides() -> str:
    """Apt settings the host needs to use its mirror (e.g. a frozen snapshot whose Release files have expired)."""
    lines = []
    for option in ("Acquire::Check-Valid-Until", "Acquire::Check-Date"):
        try:
            # apt-config is the only reliable reader of apt's merged configuration.
            result = subprocess.run(  # noqa: S603
                ["apt-config", "shell", "VALUE", option],  # noqa: S607
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError:
            return ""
        if "VALUE='false'" in result.stdout:
            lines.append(f'{option} "false";')
    return "".join(line + "\n" for line in lines)


def _prepare_upper(name: str, root: Path, upper: Path, port: int, public_key: bytes) -> None:
    if upper.exists():
        _remove_tree(upper)
    upper.mkdir(mode=0o755)

    def put(relative: str, content: str | bytes, mode: int = 0o644) -> None:
        data = content.encode() if isinstance(content, str) else content
        _write_into_upper(root, upper, relative, data, mode)

    put(
        "etc/ssh/sshd_config.d/00-sandbox-listen.conf",
        "# Machines share the host's network: listen only on this machine's own loopback port.\n"
        f"ListenAddress {SSH_HOST}:{port}\n",
    )
    put("root/.ssh/authorized_keys", public_key, 0o600)
    put("etc/hostname", f"{name}\n")
    put("etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    apt_overrides = _host_apt_acquire_overrides()
    if apt_overrides:
        put("etc/apt/apt.conf.d/50sandbox-host-mirror", apt_overrides)
    for config in HOST_PIP_CONFIG_PATHS:
        files = sorted(config.rglob("*")) if config.is_dir() else [config] if config.is_file() else []
        for source in files:
            if source.is_file():
                put(str(source.relative_to("/")), source.read_bytes())


def _escape_overlay_path(path: Path) -> str:
    return str(path).replace("\\", "\\\\").replace(":", "\\:")


def _nspawn_argv(name: str, root: Path, upper: Path) -> list[str]:
    return [
        "systemd-nspawn",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--machine={name}",
        f"--directory={root}",
        f"--overlay={_escape_overlay_path(root)}:{_escape_overlay_path(upper)}:/",
        # Without bpf in the allow-list, systemd inside cannot attach IPAddressDeny=/IPAddressAllow= filters.
        "--system-call-filter=bpf",
        "--console=read-only",
        "--link-journal=no",
        "--resolv-conf=copy-host",
        "--timezone=off",
    ]


def _cgroup_entry_wrapper(cgroups: Sequence[Path]) -> list[str]:
    """A shell prefix that moves itself into the machine's cgroups, then execs the rest of its arguments.

    Moving before exec means systemd-nspawn and everything it forks start inside the machine's own cgroups.
    """
    script = (
        'for cg in "$@"; do [ "$cg" = -- ] && break; echo $$ > "$cg/cgroup.procs" || exit 97; shift; done; '
        'shift; exec "$@"'
    )
    return ["/bin/sh", "-c", script, "sandbox-enter-cgroups", *[str(path) for path in cgroups], "--"]


def _supervise(name: str, state_dir: str) -> int:
    """Run systemd-nspawn for `name` until the machine powers off, starting it again whenever it reboots."""
    paths = StatePaths.resolve(state_dir)
    machine_paths = MachinePaths(paths.machine_dir(name))
    state = _read_json(machine_paths.state_file)
    if state is None:
        _console(f"no state file for {name}; nothing to supervise")
        return 1
    own_stat = _process_stat(os.getpid())
    if own_stat is None:
        _console("/proc is not mounted on this host; cannot record the supervisor's identity")
        return 1
    _write_json_atomically(machine_paths.supervisor_file, {"pid": os.getpid(), "start_time": own_stat[2]})

    current: dict[str, subprocess.Popen[bytes] | None] = {"child": None}
    stopping = {"requested": False}

    def stop(signum: int, _frame: object) -> None:
        stopping["requested"] = True
        child = current["child"]
        if child is not None and child.poll() is None:
            # systemd-nspawn turns SIGTERM into a clean poweroff of the container.
            child.send_signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)

    argv = [*_cgroup_entry_wrapper([Path(path) for path in state["cgroups"]]), *state["nspawn_argv"]]
    boots = 0
    while True:
        boots += 1
        _console(f"starting boot {boots} of {name}")
        started = time.monotonic()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)  # noqa: S603
        current["child"] = child
        code = child.wait()
        current["child"] = None
        _console(f"systemd-nspawn exited with status {code}")
        if code != NSPAWN_REBOOT_EXIT_CODE or stopping["requested"] or machine_paths.stop_request.exists():
            return code
        if time.monotonic() - started < 2:
            # A machine that reboots straight away would otherwise spin the CPU; give the host a breather.
            time.sleep(2)


def _launch_supervisor(name: str, paths: StatePaths, machine_paths: MachinePaths) -> None:
    machine_paths.supervisor_file.unlink(missing_ok=True)
    environment = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "PYTHONHOME"}}
    with machine_paths.console_log.open("ab") as console, open(os.devnull, "rb") as devnull:
        # setsid --fork detaches the supervisor from this process (new session, reparented to init), so it
        # outlives us and a long-lived caller such as pytest collects no zombie.
        subprocess.run(  # noqa: S603
            [  # noqa: S607
                "setsid",
                "--fork",
                sys.executable,
                "-I",
                str(Path(__file__).resolve()),
                "_supervise",
                name,
                "--state-dir",
                str(paths.state_dir),
            ],
            stdin=devnull,
            stdout=console,
            stderr=subprocess.STDOUT,
            check=True,
            env=environment,
            cwd="/",
        )


def _live_supervisor(machine_paths: MachinePaths) -> int | None:
    record = _read_json(machine_paths.supervisor_file)
    if not record:
        return None
    pid, start_time = int(record["pid"]), int(record["start_time"])
    return pid if _is_alive(pid, start_time) else None


def _machine_record(name: str, paths: StatePaths, state: dict[str, object], supervisor_pid: int) -> Machine:
    nspawn_pid, leader_pid = _nspawn_and_leader(supervisor_pid)
    machine_paths = MachinePaths(paths.machine_dir(name))
    return Machine(
        name=name,
        ssh_host=SSH_HOST,
        ssh_port=int(state["ssh_port"]),
        ssh_user=SSH_USER,
        ssh_private_key=str(paths.private_key),
        leader_pid=leader_pid,
        nspawn_pid=nspawn_pid,
        root_cache=str(state["root_cache"]),
        upper_dir=str(machine_paths.upper),
        console_log=str(machine_paths.console_log),
    )


def _ssh_accepts_key(machine: Machine) -> bool:
    try:
        with socket.create_connection((machine.ssh_host, machine.ssh_port), timeout=1):
            pass
    except OSError:
        return False
    probe = [*machine.ssh_args()[:-1], "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", machine.ssh_args()[-1], "true"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=15, check=False).returncode == 0  # noqa: S603
    except subprocess.TimeoutExpired:
        return False


def _wait_for_ssh(name: str, paths: StatePaths, timeout: float, old_leader: int | None = None) -> Machine:
    """Wait until the machine runs a PID 1 (other than `old_leader`) and its sshd accepts our key."""
    machine_paths = MachinePaths(paths.machine_dir(name))
    deadline = time.monotonic() + timeout
    while True:
        supervisor = _live_supervisor(machine_paths)
        state = _read_json(machine_paths.state_file)
        if supervisor is None or state is None:
            raise MachineError(
                f"machine {name} stopped while booting; last lines of {machine_paths.console_log}:\n"
                f"{_tail(machine_paths.console_log)}"
            )
        machine = _machine_record(name, paths, state, supervisor)
        if machine.leader_pid and machine.leader_pid != old_leader and _ssh_accepts_key(machine):
            # The leader may have changed while SSH came up (a reboot in between); report the current one.
            return _machine_record(name, paths, state, supervisor)
        if time.monotonic() >= deadline:
            raise MachineError(
                f"machine {name} did not accept SSH on {SSH_HOST}:{machine.ssh_port} within {timeout:.0f} s; "
                f"last lines of {machine_paths.console_log}:\n{_tail(machine_paths.console_log)}\n"
                f"(inspect it with `exec {name} -- journalctl -b`, remove it with `down {name}`)"
            )
        time.sleep(0.3)


def _leftovers(name: str, paths: StatePaths) -> list[str]:
    machine_paths = MachinePaths(paths.machine_dir(name))
    found = []
    if machine_paths.upper.exists():
        found.append("its upper dir")
    found.extend(f"cgroup {directory}" for directory in _cgroup_dirs(name) if directory.exists())
    if machine_paths.supervisor_file.exists():
        found.append("a dead supervisor's record")
    return found


def up(
    name: str,
    ssh_port: int | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_BOOT_TIMEOUT,
) -> Machine:
    """Boot `name` unless it already runs, wait until SSH accepts the key, and return the running machine."""
    validate_name(name)
    _require_root_and_tools("systemd-nspawn", "nsenter", "setsid", "ssh", "ssh-keygen", "debootstrap")
    paths = StatePaths.resolve(state_dir)
    key = ensure_ssh_key(paths)
    machine_paths = MachinePaths(paths.machine_dir(name))
    machine_paths.directory.mkdir(parents=True, exist_ok=True)
    with _locked(machine_paths.lock_file):
        state = _read_json(machine_paths.state_file) or {}
        if _live_supervisor(machine_paths) is not None:
            if ssh_port is not None and int(state.get("ssh_port") or 0) != ssh_port:
                raise MachineError(
                    f"machine {name} already runs with SSH on port {state.get('ssh_port')}, not {ssh_port}; "
                    f"`down {name}` first to change its port"
                )
            return _wait_for_ssh(name, paths, timeout)
        leftovers = _leftovers(name, paths)
        if leftovers:
            _note(f"cleaning up stale machine {name} ({', '.join(leftovers)})")
            _teardown(name, paths, DEFAULT_POWEROFF_TIMEOUT)
        root = build_root(paths.state_dir)
        cgroups = _cgroup_dirs(name)
        for directory in cgroups:
            if _cgroup_processes(directory):
                raise MachineError(
                    f"cgroup {directory} holds processes {_cgroup_processes(directory)} that this state dir did "
                    f"not start: a machine named {name} runs from another state dir (stop it there or pick "
                    "another name), or a killed machine left them (kill them)"
                )
        with _locked(paths.machines_dir / ".ports.lock"):
            port = _choose_port(paths, name, ssh_port, int(state.get("ssh_port") or 0) or None)
            state = {
                "name": name,
                "ssh_port": port,
                "root_cache": str(root),
                "cgroups": [str(directory) for directory in cgroups],
                "nspawn_argv": _nspawn_argv(name, root, machine_paths.upper),
            }
            _write_json_atomically(machine_paths.state_file, state)
        _prepare_upper(name, root, machine_paths.upper, port, key.with_suffix(".pub").read_bytes())
        for directory in cgroups:
            _remove_cgroup(directory)
            directory.mkdir()
        machine_paths.stop_request.unlink(missing_ok=True)
        if machine_paths.console_log.exists():
            # Kept for one more boot: it explains why an earlier run of this machine died.
            os.replace(machine_paths.console_log, machine_paths.previous_console_log)
        _launch_supervisor(name, paths, machine_paths)
        if not _wait_until(lambda: _live_supervisor(machine_paths) is not None, 15):
            raise MachineError(
                f"the supervisor of {name} did not start; last lines of {machine_paths.console_log}:\n"
                f"{_tail(machine_paths.console_log)}"
            )
        return _wait_for_ssh(name, paths, timeout)


def _orphaned_nspawn(machine_paths: MachinePaths, cgroups: Sequence[Path]) -> int | None:
    """Find our systemd-nspawn still running without its supervisor, among the processes in the machine's cgroups.

    Cgroup directories are named after the machine only, so a same-named machine of another state dir uses
    them too; ours is told apart by the systemd-nspawn process whose command line names our upper dir.
    """
    marker = str(machine_paths.upper).encode()
    for directory in cgroups:
        for pid in _cgroup_processes(directory):
            with contextlib.suppress(OSError):
                if _command_name(pid) == "systemd-nspawn" and marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
    return None


def _teardown(name: str, paths: StatePaths, timeout: float) -> None:
    """Stop every process of the machine, then remove its cgroups and upper dir. The caller holds its lock."""
    machine_paths = MachinePaths(paths.machine_dir(name))
    if machine_paths.directory.is_dir():
        machine_paths.stop_request.touch()
    supervisor = _live_supervisor(machine_paths)
    cgroups = _cgroup_dirs(name)
    if supervisor is not None:
        nspawn_pid, leader_pid = _nspawn_and_leader(supervisor)
    else:
        nspawn_pid = _orphaned_nspawn(machine_paths, cgroups)
        leader_pid = _container_leader(nspawn_pid) if nspawn_pid else None
        if nspawn_pid is None and any(_cgroup_processes(directory) for directory in cgroups):
            # Not ours (see _orphaned_nspawn): leave those processes and cgroups alone, clean only our files.
            cgroups = []

    def machine_gone() -> bool:
        return not _is_alive(supervisor) and not any(_cgroup_processes(directory) for directory in cgroups)

    if leader_pid:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(  # noqa: S603
                _nsenter_argv(leader_pid, ["systemctl", "poweroff"]),
                capture_output=True,
                timeout=15,
                check=False,
            )
    if not _wait_until(machine_gone, timeout):
        _note(f"{name} did not power off within {timeout:.0f} s; terminating it")
        _signal(supervisor, signal.SIGTERM)
        _signal(nspawn_pid, signal.SIGTERM)
        if not _wait_until(machine_gone, 10):
            # Killing PID 1 of the container kills its whole PID namespace; then sweep the cgroups.
            _signal(leader_pid, signal.SIGKILL)
            _signal(nspawn_pid, signal.SIGKILL)
            _signal(supervisor, signal.SIGKILL)
            for directory in cgroups:
                for pid in _cgroup_processes(directory):
                    _signal(pid, signal.SIGKILL)
            if not _wait_until(machine_gone, 10):
                raise MachineError(f"processes of {name} survive SIGKILL: {[_cgroup_processes(d) for d in cgroups]}")
    for directory in cgroups:
        # An exiting process leaves cgroup.procs a moment after it is reaped.
        _wait_until(lambda directory=directory: not _cgroup_processes(directory), 5)
        _remove_cgroup(directory)
    _remove_tree(machine_paths.upper)
    for work_dir in machine_paths.directory.glob(".#upper*"):
        _remove_tree(work_dir)
    if cgroups:
        # systemd-nspawn leaves this per-machine directory behind on hosts without systemd.
        _remove_tree(Path("/run/systemd/nspawn/propagate") / name)
    machine_paths.supervisor_file.unlink(missing_ok=True)
    machine_paths.stop_request.unlink(missing_ok=True)


def down(name: str, state_dir: str | os.PathLike[str] | None = None, timeout: float = DEFAULT_POWEROFF_TIMEOUT) -> None:
    """Power `name` off (forcefully after `timeout`) and remove its cgroups and upper dir; fine if it is not running."""
    validate_name(name)
    _require_root_and_tools("nsenter")
    paths = StatePaths.resolve(state_dir)
    machine_paths = MachinePaths(paths.machine_dir(name))
    if not machine_paths.directory.is_dir():
        return
    with _locked(machine_paths.lock_file):
        _teardown(name, paths, timeout)


def info(name: str, state_dir: str | os.PathLike[str] | None = None) -> Machine | None:
    """Return the running machine `name`, or None if it is not running."""
    validate_name(name)
    paths = StatePaths.resolve(state_dir)
    machine_paths = MachinePaths(paths.machine_dir(name))
    supervisor = _live_supervisor(machine_paths)
    state = _read_json(machine_paths.state_file)
    if supervisor is None or state is None:
        return None
    return _machine_record(name, paths, state, supervisor)


def list_machines(state_dir: str | os.PathLike[str] | None = None) -> list[Machine]:
    """Return the running machines of the state dir, by name."""
    paths = StatePaths.resolve(state_dir)
    if not paths.machines_dir.is_dir():
        return []
    machines = []
    for directory in sorted(paths.machines_dir.iterdir()):
        if directory.is_dir() and MACHINE_NAME_PATTERN.fullmatch(directory.name):
            machine = info(directory.name, paths.state_dir)
            if machine is not None:
                machines.append(machine)
    return machines


def _running(name: str, state_dir: str | os.PathLike[str] | None) -> Machine:
    machine = info(name, state_dir)
    if machine is None:
        raise MachineError(f"machine {name} is not running; start it with `up {name}`")
    if machine.leader_pid is None:
        raise MachineError(f"machine {name} is between boots (no PID 1 yet); retry in a few seconds")
    return machine


def reboot(
    name: str, state_dir: str | os.PathLike[str] | None = None, timeout: float = DEFAULT_BOOT_TIMEOUT
) -> Machine:
    """Reboot `name` from inside (systemctl reboot) and wait until it is back with SSH."""
    paths = StatePaths.resolve(state_dir)
    machine = _running(name, paths.state_dir)
    machine.exec(["systemctl", "reboot"], check=True, timeout=30)
    return _wait_for_ssh(name, paths, timeout, old_leader=machine.leader_pid)


def exec_in(name: str, argv: Sequence[str], state_dir: str | os.PathLike[str] | None = None) -> int:
    """Run `argv` inside `name` with this process's stdio and return its exit code."""
    machine = _running(name, state_dir)
    return subprocess.run(_nsenter_argv(machine.leader_pid, argv), check=False).returncode  # noqa: S603


# ----------------------------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m sandbox.machine",
        description="Boot Debian 12 test machines with systemd-nspawn, reachable over SSH on 127.0.0.1.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"The state dir holds roots/<recipe hash>/ (the cached root; ${ROOTS_DIR_ENV} moves it),\n"
            "machines/<NAME>/{upper,state.json,console.log} and ssh/id_ed25519 (root's login key).\n"
            "Example: python3 -m sandbox.machine up web && python3 -m sandbox.machine exec web -- "
            "systemctl is-system-running"
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    state_help = f"state dir (default: ${STATE_DIR_ENV} or {DEFAULT_STATE_DIR})"

    def command(name: str, help_text: str, with_name: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if with_name:
            sub.add_argument("name", metavar="NAME")
        sub.add_argument("--state-dir", metavar="DIR", help=state_help)
        return sub

    up_command = command("up", "boot NAME unless it runs, wait for SSH, print its JSON")
    up_command.add_argument("--ssh-port", type=int, metavar="PORT", help="default: a free port, remembered")
    up_command.add_argument("--timeout", type=float, default=DEFAULT_BOOT_TIMEOUT, help="seconds to wait for SSH")
    down_command = command("down", "power NAME off and remove its cgroups and upper dir")
    down_command.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_POWEROFF_TIMEOUT,
        help="seconds to wait for a clean poweroff before killing it",
    )
    command("list", "print the JSON of each running machine, one per line", with_name=False)
    command("info", "print the JSON of running NAME; exit 1 if it is not running")
    exec_command = command("exec", "run a command inside NAME via nsenter; exits with its status")
    exec_command.add_argument("argv", nargs="*", metavar="-- CMD ARGS", help="the command, after --")
    reboot_command = command("reboot", "reboot NAME and wait until SSH is back")
    reboot_command.add_argument("--timeout", type=float, default=DEFAULT_BOOT_TIMEOUT, help="seconds to wait for SSH")
    build_command = command("build-root", "build the cached machine root if its recipe changed", with_name=False)
    build_command.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    supervise_command = commands.add_parser("_supervise")
    supervise_command.add_argument("name")
    supervise_command.add_argument("--state-dir", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command_argv: list[str] = []
    if argv[:1] == ["exec"] and "--" in argv:
        # Everything after -- belongs to the command inside, even words that look like our own options.
        separator = argv.index("--")
        argv, command_argv = argv[:separator], argv[separator + 1 :]
    arguments = _parser().parse_args(argv)
    try:
        if arguments.command == "up":
            _emit(up(arguments.name, arguments.ssh_port, arguments.state_dir, arguments.timeout).to_json())
        elif arguments.command == "down":
            down(arguments.name, arguments.state_dir, arguments.timeout)
        elif arguments.command == "list":
            for machine in list_machines(arguments.state_dir):
                _emit(machine.to_json())
        elif arguments.command == "info":
            machine = info(arguments.name, arguments.state_dir)
            if machine is None:
                sys.stderr.write(f"machine {arguments.name} is not running\n")
                return 1
            _emit(machine.to_json())
        elif arguments.command == "exec":
            command_argv = [*arguments.argv, *command_argv]
            if not command_argv:
                raise MachineError("give the command after --, e.g. `exec NAME -- systemctl is-system-running`")
            return exec_in(arguments.name, command_argv, arguments.state_dir)
        elif arguments.command == "reboot":
            _emit(reboot(arguments.name, arguments.state_dir, arguments.timeout).to_json())
        elif arguments.command == "build-root":
            _emit(str(build_root(arguments.state_dir, force=arguments.force)))
        elif arguments.command == "_supervise":
            return _supervise(arguments.name, arguments.state_dir)
    except MachineError as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
