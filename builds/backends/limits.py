"""Per-build resource limits: a cgroup of each build's own caps the memory and the processes of its buildah.

The group is `<worker's cgroup>/wave-builds/<pid>-<build>-<random>`: on cgroup v1 in the memory and the pids
hierarchies (`memory.limit_in_bytes` and `memory.memsw.limit_in_bytes`, `pids.max`); on cgroup v2 one group
(`memory.max`, `memory.swap.max` 0, `pids.max`), the worker's cgroup handing memory and pids to its children
(where it holds processes itself, they move to `<worker's cgroup>/wave-worker` first, if the cgroup is the
worker's own: a container's, or a systemd service's with `Delegate=yes`). Each buildah command is wrapped as
`sh -c 'echo $$ > <group>/cgroup.procs && exec "$@"' ...`: it is in the group before it starts anything, and so
is everything it starts. After the build, whatever is left in the group is killed and the group removed.
Where cgroups cannot be used, the build runs without the limits and its log says why.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from wave_site.config import env_str

logger = logging.getLogger(__name__)

PARENT = "wave-builds"  # below the worker's cgroup: every build's group
WORKER_LEAF = "wave-worker"  # cgroup v2: where the worker's own processes go when its cgroup must delegate
MOUNTINFO = Path("/proc/self/mountinfo")
OWN_CGROUP = Path("/proc/self/cgroup")
REMOVE_SECONDS = 10.0  # a group's processes are killed and its removal retried this long
MEMORY_MINIMUM = 128 * 1024 * 1024  # buildah itself needs about 100 MiB
PIDS_MINIMUM = 64  # buildah's own threads count too
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)(?:i?b)?", re.IGNORECASE)


# --- Settings -----------------------------------------------------------------------------------


def size_parse(text: str) -> int:
    """Bytes from `4g`, `512M`, `64MiB`, `1.5g` or `1048576` (binary units); ValueError otherwise."""
    match = SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(float(match.group("number")) * UNITS[match.group("unit").lower()])


def size_text(size: int) -> str:
    """`8 GiB`, `64 MiB`, `1.5 GiB`, `512 bytes`."""
    for unit, name in ((1024**4, "TiB"), (1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if size >= unit:
            return f"{size / unit:.1f}".removesuffix(".0") + f" {name}"
    return f"{size} bytes"


def env_memory(environ: Mapping[str, str] | None = None) -> int:
    """WAVE_BUILD_MEMORY in bytes (default 8g; 0 or empty: no limit)."""
    value = env_str("WAVE_BUILD_MEMORY", "8g", environ=environ)
    try:
        size = size_parse(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"WAVE_BUILD_MEMORY must be a size such as 4g or 512m (0: no limit), got {value!r}"
        ) from None
    if 0 < size < MEMORY_MINIMUM:
        raise ImproperlyConfigured(
            f"WAVE_BUILD_MEMORY must be 0 (no limit) or at least {size_text(MEMORY_MINIMUM)}, got {value!r}"
        )
    return size


def env_pids(environ: Mapping[str, str] | None = None) -> int:
    """WAVE_BUILD_PIDS: processes and threads of a build (default 4096; 0: no limit)."""
    value = env_str("WAVE_BUILD_PIDS", "4096", environ=environ)
    try:
        count = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"WAVE_BUILD_PIDS must be an integer (0: no limit), got {value!r}") from None
    if count < 0 or 0 < count < PIDS_MINIMUM:
        raise ImproperlyConfigured(f"WAVE_BUILD_PIDS must be 0 (no limit) or at least {PIDS_MINIMUM}, got {count}")
    return count


# --- Where the groups go ------------------------------------------------------------------------


class LimitsUnavailable(Exception):
    """A limit cannot be applied on this host; the message says why."""


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 1 or 2
    base: Path  # the worker's own cgroup in it


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), path)


def _relative(own: str, root: str) -> str | None:
    """The worker's cgroup path below a mount of its hierarchy whose root is `root`, or None: not below it."""
    if root == "/":
        return own.lstrip("/")
    if own == root or own.startswith(root.rstrip("/") + "/"):
        return own[len(root) :].lstrip("/")
    return None


def hierarchies(mountinfo: str, own_cgroup: str) -> dict[str, Hierarchy | str]:
    """For memory and pids: the hierarchy and the worker's cgroup in it, or why there is none."""
    own: dict[str, str] = {}
    for line in own_cgroup.splitlines():
        rest = line.partition(":")[2]
        controllers, _, path = rest.partition(":")
        for name in controllers.split(",") if controllers else [""]:  # "" is the v2 (unified) hierarchy
            own[name] = path.removesuffix(" (deleted)")
    found: dict[str, Hierarchy | str] = {}
    unified: Hierarchy | None = None
    for line in mountinfo.splitlines():
        fields, _, right = line.partition(" - ")
        parts, kinds = fields.split(), right.split()
        if len(parts) < 5 or len(kinds) < 3 or kinds[0] not in {"cgroup", "cgroup2"}:
            continue
        root, point, options = _unescape(parts[3]), Path(_unescape(parts[4])), set(kinds[2].split(","))
        if kinds[0] == "cgroup2":
            relative = _relative(own.get("", "/"), root)
            if unified is None and relative is not None:
                base = point / relative
                unified = Hierarchy(2, base.parent if base.name == WORKER_LEAF else base)
            continue
        for controller in ("memory", "pids"):
            if controller in options and controller not in found and controller in own:
                relative = _relative(own[controller], root)
                if relative is not None:
                    found[controller] = Hierarchy(1, point / relative)
    for controller in ("memory", "pids"):
        if controller in found:
            continue
        if unified is None:
            found[controller] = f"no cgroup hierarchy with the {controller} controller is mounted"
            continue
        try:
            available = (unified.base / "cgroup.controllers").read_text().split()
        except OSError as exc:
            found[controller] = f"cannot read {unified.base / 'cgroup.controllers'}: {exc.strerror}"
            continue
        found[controller] = (
            unified
            if controller in available
            else f"the {controller} controller is not enabled for the worker's cgroup {unified.base}"
        )
    return found


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise LimitsUnavailable(f"cannot write {path}: {exc.strerror}") from None


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise LimitsUnavailable(f"cannot create {path}: {exc.strerror}") from None


def _is_own_cgroup(base: Path, own_path: str) -> bool:
    """Whether the worker may move the processes of its cgroup: the root of its cgroup namespace (a container's),
    or a cgroup systemd delegated (`Delegate=yes` marks it with a `delegate` extended attribute)."""
    if own_path in {"/", f"/{WORKER_LEAF}"}:
        return True
    for attribute in ("trusted.delegate", "user.delegate"):
        with contextlib.suppress(OSError):
            if os.getxattr(base, attribute) == b"1":
                return True
    return False


def _delegate(base: Path, controllers: list[str]) -> None:
    """Enable `controllers` for the children of the worker's v2 cgroup: its processes move to a leaf of their
    own first when it holds any (cgroup v2 hands controllers only from a cgroup without processes)."""
    enabled = (base / "cgroup.subtree_control").read_text().split()
    change = " ".join(f"+{controller}" for controller in controllers if controller not in enabled)
    if not change:
        return
    for _ in range(10):
        try:
            (base / "cgroup.subtree_control").write_text(change)
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise LimitsUnavailable(f"cannot write {base / 'cgroup.subtree_control'}: {exc.strerror}") from None
        own_path = next((line[3:] for line in OWN_CGROUP.read_text().splitlines() if line.startswith("0::")), "")
        if not _is_own_cgroup(base, own_path):
            raise LimitsUnavailable(
                f"the worker's cgroup {base} holds processes and is not delegated to it (cgroup v2 hands memory and"
                " pids to child groups only from a cgroup without processes): run the worker in a container or a"
                " systemd service with Delegate=yes"
            )
        leaf = base / WORKER_LEAF
        _mkdir(leaf)
        for pid in (base / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # gone meanwhile; or stays, and the next try says so
                (leaf / "cgroup.procs").write_text(pid)
    raise LimitsUnavailable(f"cannot enable {change} in {base / 'cgroup.subtree_control'}: processes keep arriving")


def _sweep(parent: Path) -> None:
    """Remove the groups of workers that died mid-build (named `<pid>-...`, the pid gone)."""
    with contextlib.suppress(OSError):
        for group in list(parent.iterdir()):
            pid = group.name.partition("-")[0]
            if not pid.isdigit() or not group.is_dir():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    group.rmdir()
            except PermissionError:
                pass


# --- A build's group ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildCgroup:
    """A build's group: each (controller, directory) it has (one directory per v1 hierarchy, one for v2)."""

    groups: tuple[tuple[str, Path], ...] = ()
    memory: int = 0
    pids: int = 0

    @property
    def directories(self) -> list[Path]:
        return list(dict.fromkeys(directory for _, directory in self.groups))

    def prefix(self) -> list[str]:
        """What a command is run behind: a shell that joins the group, then becomes the command."""
        directories = self.directories
        if not directories:
            return []
        joins = " && ".join(f'echo $$ > "${number}"' for number in range(1, len(directories) + 1))
        script = (
            f'{joins} || {{ echo "Error: the build could not join its cgroup" >&2; exit 125; }}; '
            f'shift {len(directories)}; exec "$@"'
        )
        return ["sh", "-c", script, "wave-build-limits", *(str(path / "cgroup.procs") for path in directories)]

    def failure_reason(self) -> str:
        """Why a failed build failed, when a limit did it: the kernel killed a process for memory, or a fork
        or a thread was refused for the process limit."""
        for controller, directory in self.groups:
            if controller == "memory" and _oom_kills(directory) > 0:
                return f"Build ran out of memory (limit {size_text(self.memory)})"
        for controller, directory in self.groups:
            if controller == "pids" and _counters(directory / "pids.events").get("max", 0) > 0:
                return f"Build reached the process limit ({self.pids})"
        return ""

    def remove(self) -> None:
        """Kill whatever is left in the group and remove it (retried while its processes exit). Never raises."""
        deadline = time.monotonic() + REMOVE_SECONDS
        for directory in self.directories:
            while True:
                for pid in _pids(directory):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if time.monotonic() >= deadline:
                        logger.warning("build cgroup %s not removed: %s", directory, exc.strerror)
                        break
                time.sleep(0.05)


NO_CGROUP = BuildCgroup()


def _counters(path: Path) -> dict[str, int]:
    """`name value` lines (memory.events, pids.events, memory.oom_control); {} when unreadable."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    counters = {}
    for line in lines:
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            counters[name] = int(value)
    return counters


def _oom_kills(directory: Path) -> int:
    if (directory / "memory.events").exists():  # v2
        return _counters(directory / "memory.events").get("oom_kill", 0)
    control = _counters(directory / "memory.oom_control")
    if "oom_kill" in control:
        return control["oom_kill"]
    with contextlib.suppress(OSError, ValueError):  # kernels before 4.13: the limit was hit
        return int((directory / "memory.failcnt").read_text())
    return 0


def _pids(directory: Path) -> list[int]:
    try:
        return [int(pid) for pid in (directory / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _create(hierarchy: Hierarchy, limits: dict[str, int], name: str) -> Path:
    """The group `name` below the worker's cgroup in one hierarchy, its limits set (LimitsUnavailable)."""
    if hierarchy.version == 2:
        _delegate(hierarchy.base, list(limits))
    parent = hierarchy.base / PARENT
    _mkdir(parent)
    _sweep(parent)
    if hierarchy.version == 2:
        _write(parent / "cgroup.subtree_control", " ".join(f"+{controller}" for controller in limits))
    group = parent / name
    try:
        group.mkdir()
    except OSError as exc:
        raise LimitsUnavailable(f"cannot create {group}: {exc.strerror}") from None
    try:
        if "memory" in limits and hierarchy.version == 1:
            _write(group / "memory.limit_in_bytes", str(limits["memory"]))
            if (group / "memory.memsw.limit_in_bytes").exists():  # swap accounting: no swap either
                _write(group / "memory.memsw.limit_in_bytes", str(limits["memory"]))
        elif "memory" in limits:
            _write(group / "memory.max", str(limits["memory"]))
            if (group / "memory.swap.max").exists():
                _write(group / "memory.swap.max", "0")
        if "pids" in limits:
            _write(group / "pids.max", str(limits["pids"]))
    except LimitsUnavailable:
        with contextlib.suppress(OSError):
            group.rmdir()
        raise
    return group


def build_cgroup_create(build_id: str, *, memory: int, pids: int) -> tuple[BuildCgroup, list[str]]:
    """The build's group with each limit asked for (0: none) that this host can apply, and why the others
    cannot be."""
    wanted = {controller: limit for controller, limit in (("memory", memory), ("pids", pids)) if limit}
    if not wanted:
        return NO_CGROUP, []
    labels = {"memory": f"memory ({size_text(memory)})", "pids": f"processes ({pids})"}
    try:
        located = hierarchies(MOUNTINFO.read_text(), OWN_CGROUP.read_text())
    except OSError as exc:
        return NO_CGROUP, [f"cannot read the worker's cgroups: {exc.strerror}"]
    name = f"{os.getpid()}-{re.sub(r'[^A-Za-z0-9_.-]', '_', build_id)[:80]}-{secrets.token_hex(4)}"
    by_hierarchy: dict[Hierarchy, dict[str, int]] = {}
    reasons = []
    for controller, limit in wanted.items():
        hierarchy = located[controller]
        if isinstance(hierarchy, str):
            reasons.append(f"{labels[controller]}: {hierarchy}")
        else:
            by_hierarchy.setdefault(hierarchy, {})[controller] = limit
    groups: list[tuple[str, Path]] = []
    for hierarchy, limits in by_hierarchy.items():
        try:
            group = _create(hierarchy, limits, name)
        except (LimitsUnavailable, OSError) as exc:
            why = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
            reasons.append(f"{' and '.join(labels[controller] for controller in limits)}: {why}")
        else:
            groups += [(controller, group) for controller in limits]
    return BuildCgroup(groups=tuple(groups), memory=memory, pids=pids), reasons


@contextlib.contextmanager
def build_cgroup(build_id: str, *, log: Callable[[str], None]) -> Iterator[BuildCgroup]:
    """The build's group (WAVE_BUILD_MEMORY, WAVE_BUILD_PIDS) for as long as the build runs; removed after it.
    The limits that cannot be applied are said once in the build's log, and in the worker's."""
    cgroup, reasons = build_cgroup_create(build_id, memory=settings.WAVE_BUILD_MEMORY, pids=settings.WAVE_BUILD_PIDS)
    if reasons:
        log(f"Resource limits not applied, the build runs without them: {'; '.join(reasons)}\n")
        logger.warning("build %s: resource limits not applied: %s", build_id, "; ".join(reasons))
    try:
        yield cgroup
    finally:
        cgroup.remove()
