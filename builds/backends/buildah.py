"""The buildah builder: `buildah bud` then `buildah push`, in a work dir of its own, removed whatever happens.

A build's work dir (`DATA_DIR/builds/<buildId>-<random>`) holds the Containerfile, the context, the auth file
(0600), a registries config, and the storage and run roots: nothing is shared between builds and nothing
stays. Every buildah runs as `setpriv --pdeathsig KILL unshare --pid --mount --fork --kill-child buildah ...`
in a session of its own: buildah is the init of a PID namespace, so nothing a RUN step starts (a `setsid`
daemon included) outlives it; its mounts stay in a private mount namespace; and it dies with this worker.
`buildah bud` runs in a network namespace of its own unless the network is `host`: without any network
(`none`), or with public addresses only (`filtered`, the default: builds.backends.network).
Output goes to `log` as it comes; the timeout and `should_stop()` kill the whole group.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings

from builds.backends import network
from builds.backends.base import BuildJob, BuildOutcome
from builds.backends.limits import NO_CGROUP, BuildCgroup, build_cgroup
from builds.backends.output import Output, error_summary
from builds.containerfiles import Containerfile, ContainerfileError, auth_file, containerfile_checked, host_architecture
from credentials.policy import destination_check
from credentials.tower import TowerError
from registry.endpoints import is_insecure
from registry.reference import InvalidReferenceError, parse_image
from registry.ssrf import DestinationRefusedError

logger = logging.getLogger(__name__)

TIMED_OUT = "Container image build timed out '{target}'"
CANCELLED = "Build cancelled"
POLL_SECONDS = 1.0  # should_stop() and the deadline are looked at this often, at least
KILL_GRACE_SECONDS = 5.0
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
QEMU_ARCHITECTURES = {"amd64": "x86_64", "arm64": "aarch64", "arm": "arm"}
NO_NETWORK = "none"
HOST_NETWORK = "host"
# "" is `filtered`. chroot isolation allows only the host's network: "none" and "filtered" are namespaces of our own.
NETWORKS = ("", network.FILTERED, HOST_NETWORK, NO_NETWORK)
NETWORK_LINES = {
    network.FILTERED: "Network 'filtered': base images are pulled first, then the build reaches public addresses only",
    HOST_NETWORK: "Network 'host': RUN steps share the build worker's network",
    NO_NETWORK: "Network 'none': base images are pulled first, RUN steps have no network, the layer cache is not used",
}
# RUN steps run as root in a chroot: without these they could leave it (a second chroot), reach other processes'
# files (/proc/<pid>/root), or read any file whatever its mode; nor change the network's rules (NET_ADMIN) or
# write frames past them (NET_RAW: packet sockets).
DROPPED_CAPABILITIES = ("CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_SYS_MODULE",
                        "CAP_SYS_RAWIO", "CAP_SYS_BOOT", "CAP_MKNOD", "CAP_NET_ADMIN", "CAP_NET_RAW")  # fmt: skip
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


class BuildRefused(Exception):
    """The build cannot start; `message` is its failure reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def failed(reason: str, exit_status: int | None = None) -> BuildOutcome:
    return BuildOutcome(succeeded=False, exit_status=exit_status, digest="", failure_reason=reason)


# --- Work dir -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkDir:
    """A build's own directory and what it holds."""

    root: Path
    containerfile: Path
    context: Path
    auth: Path
    registries: Path  # registries.conf: short names and insecure hosts
    registries_dir: Path  # registries.conf.d: empty, so that the host's drop-ins do not apply
    aliases: Path
    storage: Path
    run: Path
    tmp: Path
    digest: Path

    @classmethod
    def at(cls, root: Path) -> WorkDir:
        return cls(
            root=root, containerfile=root / "Containerfile", context=root / "context", auth=root / "auth.json",
            registries=root / "registries.conf", registries_dir=root / "registries.conf.d",
            aliases=root / "short-name-aliases.conf", storage=root / "storage", run=root / "run", tmp=root / "tmp",
            digest=root / "digest",
        )  # fmt: skip


def work_dir_create(build_id: str) -> WorkDir:
    """An empty directory of this build's own (mode 0700) under DATA_DIR/builds."""
    parent = settings.DATA_DIR / "builds"
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", build_id)[:80]
    return WorkDir.at(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent)))


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), path)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this process's mount namespace, deepest first."""
    prefix = str(path).rstrip("/")
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mountinfo:
        for line in mountinfo:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def work_dir_remove(work: WorkDir) -> None:
    """Unmount whatever is mounted below the work dir (lazily), then remove it. Never raises."""
    try:
        for point in mounts_under(work.root):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)
        shutil.rmtree(work.root)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("build work dir %s not removed: %s", work.root, exc)


def work_dirs_sweep(*, older_than: float) -> list[Path]:
    """Remove work dirs left by a worker killed mid-build (its processes died with it), untouched for
    `older_than` seconds: pass more than the build timeout, since workers may share a data dir."""
    parent = settings.DATA_DIR / "builds"
    limit = time.time() - older_than
    stale = [path for path in (parent.iterdir() if parent.is_dir() else []) if path.stat().st_mtime < limit]
    for path in stale:
        work_dir_remove(WorkDir.at(path))
    return stale


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)


def registries_conf(insecure: list[str]) -> str:
    """Short names resolve on Docker Hub (as the service parses them); plain http only for insecure hosts."""
    lines = ['unqualified-search-registries = ["docker.io"]', 'short-name-mode = "permissive"', ""]
    for host in insecure:
        lines += ["[[registry]]", f"location = {json.dumps(host)}", "insecure = true", ""]
    return "\n".join(lines)


def auth_secrets(auth: dict[str, dict[str, dict[str, str]]]) -> list[str]:
    """What must never reach the log: each `auth` value, `user:password` and the password in it, and the login
    of the worker's proxy (buildah hands the proxy variables on to RUN steps, which may print them)."""
    secrets = []
    for entry in auth["auths"].values():
        pair = base64.b64decode(entry["auth"]).decode()
        secrets += [entry["auth"], pair, pair.partition(":")[2]]
    for name in PROXY_VARIABLES:  # the ones the builder passes on (Session.environment)
        try:
            parts = urlsplit(os.environ.get(name, ""))
        except ValueError:
            continue
        if parts.password:
            secrets += [parts.password, unquote(parts.password), f"{parts.username}:{parts.password}"]
    return secrets


# --- Checks before a build ----------------------------------------------------------------------


def emulation_missing(parsed: Containerfile, *, binfmt_dir: Path = BINFMT_DIR) -> str:
    """Why RUN steps for another architecture cannot run on this host, or "" when they can (or there are none)."""
    host = host_architecture()
    for arch in sorted(parsed.run_architectures() - {host}):
        handler = binfmt_dir / f"qemu-{QEMU_ARCHITECTURES.get(arch, arch)}"
        try:
            enabled = handler.read_text().splitlines()[:1] == ["enabled"]
        except OSError:
            enabled = False
        if not enabled:
            return (
                f"Cannot run the Containerfile's RUN steps for linux/{arch} on this {host} build worker: no emulator"
                f" is registered ({handler} is missing); install qemu-user-static and binfmt-support on the worker"
            )
    return ""


@dataclass(frozen=True)
class Plan:
    parsed: Containerfile
    auth: dict[str, dict[str, dict[str, str]]]
    insecure: list[str]


def build_plan(job: BuildJob, *, binfmt_dir: Path) -> Plan:
    """The checks before a build: Containerfile, SSRF, emulation, credentials (BuildRefused with the reason)."""
    if job.network not in NETWORKS:
        raise BuildRefused(
            f"Build network '{job.network}' is not supported by buildah with chroot isolation: use 'filtered', 'host'"
            " or 'none'"
        )
    try:
        target = parse_image(job.target)
    except InvalidReferenceError as exc:
        raise BuildRefused(f"Invalid target image: {exc.message}") from None
    try:
        parsed = containerfile_checked(job.container_file, platform=job.platform)
    except ContainerfileError as exc:
        raise BuildRefused(exc.message) from None
    repositories = {"Build repository": target.registry}
    if job.cache_repository:
        repositories["Cache repository"] = job.cache_repository.split("/", 1)[0].lower()
    for label, host in repositories.items():
        try:
            destination_check(host)
        except DestinationRefusedError as exc:
            raise BuildRefused(f"{label} refused: {exc.message}") from None
    reason = emulation_missing(parsed, binfmt_dir=binfmt_dir)
    if reason:
        raise BuildRefused(reason)
    hosts = [image.registry for image in parsed.images] + list(repositories.values())
    try:
        auth = auth_file(hosts, job.credentials)
    except TowerError as exc:
        raise BuildRefused(f"Registry credentials could not be looked up: {exc.message}") from None
    insecure = [host for host in dict.fromkeys(hosts) if is_insecure(host, settings.WAVE_INSECURE_REGISTRIES)]
    return Plan(parsed=parsed, auth=auth, insecure=insecure)


# --- Running buildah ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    status: int | None  # the exit status; None when killed or never started
    reason: str  # "" or the failure reason of a timeout, a cancel, a command that is not there
    error: str  # buildah's last error line


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def kill(process: subprocess.Popen[bytes]) -> None:
    """Kill a command's whole process group. Its namespace init (buildah) goes first, so that the kernel
    ends every process of the namespace and `unshare` reaps it; then the group, then wait."""
    for child in _children(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@dataclass
class Session:
    """One build's commands: its work dir, deadline, log and cancel check."""

    job: BuildJob
    work: WorkDir
    log: Callable[[str], None]
    should_stop: Callable[[], bool]
    deadline: float
    secrets: list[str]
    last_poll: float = field(default=float("-inf"))
    cgroup: BuildCgroup = NO_CGROUP  # the build's resource limits (builds.backends.limits)

    def command(self, args: tuple[str, ...], *, namespace: list[str] | None = None) -> list[str]:
        """The confined buildah command line; `namespace`: None for the worker's network, else a network namespace
        of its own (`unshare --net`) with this wrapper command before buildah."""
        confinement = ["setpriv", "--pdeathsig", "KILL", "--", "unshare", "--pid", "--mount", "--fork", "--kill-child",
                       "--mount-proc"]  # fmt: skip
        isolation = [] if namespace is None else ["--net", *namespace]
        return [
            *self.cgroup.prefix(),  # the build's cgroup, joined before anything starts
            *confinement, *isolation,
            "buildah", "--root", str(self.work.storage), "--runroot", str(self.work.run), "--storage-driver", "vfs",
            "--registries-conf", str(self.work.registries), "--registries-conf-dir", str(self.work.registries_dir),
            "--short-name-alias-conf", str(self.work.aliases),
            *args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C.UTF-8"}
        env |= {"HOME": str(self.work.root), "TMPDIR": str(self.work.tmp)}
        return env | {name: os.environ[name] for name in PROXY_VARIABLES if name in os.environ}

    def stop_reason(self) -> str:
        now = time.monotonic()
        if now >= self.deadline:
            return TIMED_OUT.format(target=self.job.target)
        if now - self.last_poll >= POLL_SECONDS:
            self.last_poll = now
            if self.should_stop():
                return CANCELLED
        return ""

    def wait_time(self) -> float:
        now = time.monotonic()
        return max(0.0, min(POLL_SECONDS, self.deadline - now, self.last_poll + POLL_SECONDS - now))

    def run(self, *args: str, offline: bool = False, filtered: network.Filter | None = None) -> Finished:
        """Run one buildah command, its output (stdout and stderr merged) streamed to the log; in a network
        namespace of its own when `offline` (without any network) or `filtered` (public addresses only)."""
        link = network.Link(filtered) if filtered is not None else None
        try:
            namespace = link.wrapper() if link else [] if offline else None
            return self.run_command(self.command(args, namespace=namespace), link)
        finally:
            if link:
                link.close()  # slirp4netns, once the build's processes are gone

    def run_command(self, command: list[str], link: network.Link | None) -> Finished:
        """Run `command`; `link`: the filtered network its namespace is attached to once it exists."""
        output = Output(self.log, secrets=self.secrets)
        try:
            process = subprocess.Popen(
                command,
                stdin=link.stdin if link else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.work.root,
                env=self.environment(),
                start_new_session=True,  # its own process group: killed as one
            )
        except FileNotFoundError as exc:
            return Finished(status=None, reason=f"'{exc.filename}' is not installed on this build worker", error="")
        assert process.stdout is not None
        stopped = ""
        try:
            stopped = link.attach(process.pid, deadline=self.deadline) if link else ""
            descriptor = process.stdout.fileno()
            os.set_blocking(descriptor, False)
            reading = True
            while not stopped and not (stopped := self.stop_reason()):
                if reading:
                    reading = output.read(descriptor, timeout=self.wait_time())
                else:
                    try:
                        process.wait(timeout=self.wait_time())
                        break
                    except subprocess.TimeoutExpired:
                        pass
        finally:
            if process.poll() is None:
                kill(process)
            process.stdout.close()
            output.release()
        output.close()
        return Finished(status=None if stopped else process.returncode, reason=stopped, error=output.last_error)

    def outcome_of(self, finished: Finished, step: str) -> BuildOutcome | None:
        """The failed outcome of a step that did not succeed, else None."""
        if finished.reason:
            return failed(finished.reason)
        if finished.status != 0:
            reason = (
                self.cgroup.failure_reason()
                or error_summary(finished.error, secrets=self.secrets)
                or f"buildah {step} exited with status {finished.status}"
            )
            return failed(reason, finished.status)
        return None


# --- The builder --------------------------------------------------------------------------------


@dataclass
class BuildahBuilder:
    binfmt_dir: Path = BINFMT_DIR

    def build(self, job: BuildJob, *, log: Callable[[str], None], should_stop: Callable[[], bool]) -> BuildOutcome:
        deadline = time.monotonic() + job.timeout
        try:
            plan = build_plan(job, binfmt_dir=self.binfmt_dir)
        except BuildRefused as exc:
            return failed(exc.message)
        work = work_dir_create(job.build_id)
        try:
            try:
                self.prepare(job, plan, work)
            except OSError as exc:
                return failed(f"The build's work dir could not be prepared: {exc.strerror or exc}")
            secrets = auth_secrets(plan.auth)
            session = Session(job=job, work=work, log=log, should_stop=should_stop, deadline=deadline, secrets=secrets)
            with build_cgroup(job.build_id, log=log) as cgroup:
                session.cgroup = cgroup
                return self.run(session, plan)
        finally:
            work_dir_remove(work)

    @staticmethod
    def prepare(job: BuildJob, plan: Plan, work: WorkDir) -> None:
        work.containerfile.write_text(job.container_file, encoding="utf-8")
        if job.context_dir is not None:
            shutil.copytree(job.context_dir, work.context, symlinks=True)
        else:
            work.context.mkdir()
        _write_private(work.auth, json.dumps(plan.auth))
        work.registries.write_text(registries_conf(plan.insecure), encoding="utf-8")
        for directory in (work.registries_dir, work.storage, work.run, work.tmp):
            directory.mkdir(mode=0o700)

    @staticmethod
    def run(session: Session, plan: Plan) -> BuildOutcome:
        job, work = session.job, session.work
        options = ["--isolation", "chroot", "--platform", str(job.platform), "--format", "docker"]
        options += ["--cap-drop", ",".join(DROPPED_CAPABILITIES)]
        options += ["--authfile", str(work.auth), "-f", str(work.containerfile)]
        mode = job.network or network.FILTERED
        session.log(NETWORK_LINES[mode] + "\n")
        offline, filtered = mode == NO_NETWORK, None
        if mode == network.FILTERED:
            if reason := network.tools_missing():
                return failed(reason)
            filtered = network.filter_prepare(work.root, job.cache_repository)
        if mode != HOST_NETWORK:  # bud runs without the worker's network: the base images come first
            for stage_image, platform in plan.parsed.images_with_platforms(job.platform):
                pulled = session.run("pull", "--platform", str(platform), "--authfile", str(work.auth), stage_image)
                if (outcome := session.outcome_of(pulled, "pull")) is not None:
                    return outcome
            options.append("--pull=never")
        if job.cache_repository and not offline:
            options += ["--layers", "--cache-from", job.cache_repository, "--cache-to", job.cache_repository]
        built = session.run("bud", *options, "-t", job.target, str(work.context), offline=offline, filtered=filtered)
        if (outcome := session.outcome_of(built, "bud")) is not None:
            return outcome
        push = ["push", "--authfile", str(work.auth), "--digestfile", str(work.digest)]
        pushed = session.run(*push, job.target, f"docker://{job.target}")
        if (outcome := session.outcome_of(pushed, "push")) is not None:
            return outcome
        digest = work.digest.read_text().strip() if work.digest.exists() else ""
        if not digest.startswith("sha256:"):
            return failed(f"buildah push of '{job.target}' wrote no digest", pushed.status)
        return BuildOutcome(succeeded=True, exit_status=0, digest=digest, failure_reason="")
