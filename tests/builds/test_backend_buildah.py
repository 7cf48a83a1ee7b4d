"""The buildah builder with real buildah, real registries and skopeo/umoci: images built, pushed, cached;
failures, timeouts and cancels end with one-line reasons; no process, work dir or mount outlives a build."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from builds.backends import BuildJob, BuildOutcome, builder
from builds.backends.buildah import (
    BuildahBuilder,
    build_plan,
    emulation_missing,
    work_dir_create,
    work_dir_remove,
    work_dirs_sweep,
)
from builds.backends.output import Output, error_summary
from builds.containerfiles import containerfile_parse, host_architecture
from registry.client import Credentials
from registry.platform import Platform
from tests.conftest import PushedImage
from tests.support.images import run, skopeo_copy, skopeo_inspect

HOST = Platform("linux", host_architecture())
FOREIGN_ARCH = "amd64" if HOST.arch == "arm64" else "arm64"
FOREIGN_QEMU = {"amd64": "x86_64", "arm64": "aarch64"}[FOREIGN_ARCH]


class Log:
    """The `log` callback: what the builder sent, in order."""

    def __init__(self, on_text: Callable[[str], None] | None = None) -> None:
        self.chunks: list[str] = []
        self.on_text = on_text

    def __call__(self, text: str) -> None:
        self.chunks.append(text)
        if self.on_text:
            self.on_text(self.text)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


@pytest.fixture
def data_dir(settings, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


def make_job(registry_host: str, container_file: str, **changes: object) -> BuildJob:
    job = BuildJob(
        build_id="bd-0123456789abcdef_1",
        container_file=container_file,
        context_dir=None,
        platform=HOST,
        target=f"{registry_host}/wave/build:{uuid.uuid4().hex[:16]}",
        cache_repository=None,
        credentials=lambda host: None,
        timeout=120,
    )
    return replace(job, **changes)  # type: ignore[arg-type]


def build(job: BuildJob, log: Log | None = None, should_stop: Callable[[], bool] = lambda: False) -> BuildOutcome:
    return builder().build(job, log=log or Log(), should_stop=should_stop)


def processes_mentioning(*needles: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(needle in text for needle in needles):
            found.append(f"{cmdline.parent.name}: {text}")
    return found


def slirp_children(parent: int) -> list[int]:
    """The live slirp4netns processes (a filtered build's network) whose parent is `parent`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, ValueError):
            continue
        state, ppid = rest.split()[:2]
        if name == "slirp4netns" and state != "Z" and int(ppid) == parent:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def zombie_children() -> list[str]:
    """Children of this process that nobody reaped."""
    zombies = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state == "Z" and int(ppid) == os.getpid():
            zombies.append(stat.parent.name)
    return zombies


def assert_nothing_left(data_dir: Path, *markers: str) -> None:
    """No work dir, no mount below the data dir, no process of the build (by its paths or markers), no slirp4netns
    of ours, no zombie."""
    builds = data_dir / "builds"
    assert not builds.exists() or list(builds.iterdir()) == []
    assert [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(data_dir) in line] == []
    assert processes_mentioning(str(builds), *markers) == []
    assert slirp_children(os.getpid()) == []
    assert zombie_children() == []


def unpacked(reference: str, into: Path, *, creds: str | None = None) -> Path:
    into.mkdir()
    skopeo_copy(reference, into / "layout", creds=creds)
    run(["umoci", "unpack", "--rootless", "--image", f"{into / 'layout'}:latest", str(into / "bundle")])
    return into / "bundle" / "rootfs"


@pytest.mark.slow
def test_build_from_busybox_with_run_and_copy_is_pushed_and_holds_the_files(
    anonymous_image: PushedImage, data_dir: Path, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "greeting.txt").write_text("hello from the context\n")
    container_file = (
        f"FROM {anonymous_image.reference}\n"
        "RUN echo built-by-wave > /wave-built.txt && cat /wave-built.txt\n"
        "COPY greeting.txt /greeting.txt\n"
    )
    job = make_job(anonymous_image.registry.host, container_file, context_dir=context)
    work_dirs: list[tuple[str, int, list[str]]] = []

    def look_at_work_dir(text: str) -> None:
        if not work_dirs:
            [work] = (data_dir / "builds").iterdir()
            work_dirs.append((work.name, (work / "auth.json").stat().st_mode & 0o777, sorted(os.listdir(work))))

    log = Log(look_at_work_dir)
    outcome = build(job, log)

    assert outcome == BuildOutcome(succeeded=True, exit_status=0, digest=outcome.digest, failure_reason="")
    assert outcome.digest == skopeo_inspect(job.target)["Digest"]
    rootfs = unpacked(job.target, tmp_path / "unpacked")
    assert (rootfs / "wave-built.txt").read_text() == "built-by-wave\n"
    assert (rootfs / "greeting.txt").read_text() == "hello from the context\n"
    assert f"STEP 1/3: FROM {anonymous_image.reference}\n" in log.text
    assert "\nbuilt-by-wave\n" in log.text  # the RUN step's own output
    assert "Writing manifest to image destination" in log.text  # the push's
    [(name, auth_mode, contents)] = work_dirs
    assert re.fullmatch(r"bd-0123456789abcdef_1-\w+", name)
    assert auth_mode == 0o600
    assert {"Containerfile", "context", "auth.json", "storage", "run"} <= set(contents)
    assert_nothing_left(data_dir)


@pytest.mark.slow
def test_basic_auth_from_and_push_use_the_jobs_credentials_and_never_log_them(
    basic_image: PushedImage, data_dir: Path
) -> None:
    registry = basic_image.registry
    assert registry.username
    assert registry.password
    credentials = {registry.host: Credentials(registry.username, registry.password)}
    container_file = f"FROM {basic_image.reference}\nRUN echo the password is {registry.password}\n"
    job = make_job(registry.host, container_file, credentials=credentials.get)
    log = Log()

    outcome = build(job, log)

    assert outcome.succeeded, outcome.failure_reason
    assert outcome.digest == skopeo_inspect(job.target, creds=registry.creds)["Digest"]
    basic = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    for secret in (registry.password, basic, '"auths"'):
        assert secret not in log.text
    assert "\nthe password is ***\n" in log.text  # even a step that prints it
    assert_nothing_left(data_dir)


@pytest.mark.slow
def test_without_credentials_the_private_from_image_fails_with_one_line(
    basic_image: PushedImage, data_dir: Path
) -> None:
    job = make_job(basic_image.registry.host, f"FROM {basic_image.reference}\n")
    outcome = build(job)
    assert not outcome.succeeded
    assert outcome.exit_status == 125
    assert outcome.failure_reason.startswith(f"error initializing source docker://{basic_image.reference}")
    assert outcome.failure_reason.endswith("authentication required")
    assert "\n" not in outcome.failure_reason
    with pytest.raises(RuntimeError):
        skopeo_inspect(job.target, creds=basic_image.registry.creds)  # nothing pushed
    assert_nothing_left(data_dir)


@pytest.mark.slow
def test_a_push_the_build_repository_refuses_fails_with_one_line(
    anonymous_image: PushedImage, basic_image: PushedImage, data_dir: Path
) -> None:
    job = make_job(basic_image.registry.host, f"FROM {anonymous_image.reference}\nENV A=1\n")
    outcome = build(job)
    assert not outcome.succeeded
    assert outcome.exit_status == 125
    assert outcome.failure_reason.startswith(f'error pushing image "{job.target}" to "docker://{job.target}"')
    assert outcome.failure_reason.endswith("unauthorized: authentication required")
    assert_nothing_left(data_dir)


@pytest.mark.slow
def test_unknown_from_image_fails_with_one_line(anonymous_image: PushedImage, data_dir: Path) -> None:
    missing = f"{anonymous_image.registry.host}/library/does-not-exist:1"
    outcome = build(make_job(anonymous_image.registry.host, f"FROM {missing}\nRUN true\n"))
    assert outcome == BuildOutcome(
        succeeded=False,
        exit_status=125,
        digest="",
        failure_reason=(
            f"error initializing source docker://{missing}: reading manifest 1 in "  # the pull before the build
            f"{anonymous_image.registry.host}/library/does-not-exist: manifest unknown: manifest unknown"
        ),
    )
    assert_nothing_left(data_dir)


@pytest.mark.slow
def test_failing_run_step_fails_with_its_exit_status_and_the_log_holds_its_output(
    anonymous_image: PushedImage, data_dir: Path
) -> None:
    job = make_job(anonymous_image.registry.host, f"FROM {anonymous_image.reference}\nRUN echo about to fail; exit 3\n")
    log = Log()
    outcome = build(job, log)
    assert outcome == BuildOutcome(
        succeeded=False,
        exit_status=3,
        digest="",
        failure_reason='error building at STEP "RUN echo about to fail; exit 3": exit status 3',
    )
    assert "\nabout to fail\n" in log.text
    assert "Traceback" not in log.text
    with pytest.raises(RuntimeError):
        skopeo_inspect(job.target)  # nothing pushed
    assert_nothing_left(data_dir)


@pytest.mark.slow
def test_timeout_kills_the_whole_build_and_leaves_nothing(anonymous_image: PushedImage, data_dir: Path) -> None:
    container_file = f"FROM {anonymous_image.reference}\nRUN echo started; sleep 67\n"
    job = make_job(anonymous_image.registry.host, container_file, timeout=3)
    log = Log()
    started = time.monotonic()
    outcome = build(job, log)
    elapsed = time.monotonic() - started
    assert outcome == BuildOutcome(
        succeeded=False, exit_status=None, digest="", failure_reason=f"Container image build timed out '{job.target}'"
    )
    assert "\nstarted\n" in log.text  # the timeout struck during the RUN step
    assert 3 <= elapsed < 8
    assert_nothing_left(data_dir, "sleep 67")


@pytest.mark.slow
def test_cancel_kills_the_build_within_a_second_or_two(anonymous_image: PushedImage, data_dir: Path) -> None:
    container_file = f"FROM {anonymous_image.reference}\nRUN echo cancel-me; sleep 68\n"
    log = Log()
    cancelled_at: list[float] = []

    def should_stop() -> bool:
        if "\ncancel-me\n" in log.text and not cancelled_at:
            cancelled_at.append(time.monotonic())
        return bool(cancelled_at)

    outcome = build(make_job(anonymous_image.registry.host, container_file), log, should_stop)
    assert outcome == BuildOutcome(succeeded=False, exit_status=None, digest="", failure_reason="Build cancelled")
    assert time.monotonic() - cancelled_at[0] < 3
    assert_nothing_left(data_dir, "sleep 68")


@pytest.mark.slow
def test_a_daemon_started_by_a_run_step_does_not_outlive_the_build(
    anonymous_image: PushedImage, data_dir: Path
) -> None:
    container_file = f"FROM {anonymous_image.reference}\nRUN (setsid sleep 69 > /dev/null 2>&1 &); echo spawned\n"
    outcome = build(make_job(anonymous_image.registry.host, container_file))
    assert outcome.succeeded, outcome.failure_reason
    assert_nothing_left(data_dir, "sleep 69")


@pytest.mark.slow
def test_an_exception_from_the_log_still_cleans_up(anonymous_image: PushedImage, data_dir: Path) -> None:
    class LogStoreDown(Exception):
        pass

    def failing_log(text: str) -> None:
        if "STEP 2/2" in text:
            raise LogStoreDown()

    container_file = f"FROM {anonymous_image.reference}\nRUN sleep 66\n"
    with pytest.raises(LogStoreDown):
        builder().build(
            make_job(anonymous_image.registry.host, container_file), log=failing_log, should_stop=lambda: False
        )
    assert_nothing_left(data_dir, "sleep 66")


def test_refused_from_host_fails_before_buildah_runs(anonymous_image: PushedImage, data_dir: Path, settings) -> None:
    settings.WAVE_SSRF_ALLOW = []
    log = Log()
    outcome = build(make_job("127.0.0.1:9", f"FROM {anonymous_image.reference}\nRUN true\n"), log)
    assert outcome == BuildOutcome(
        succeeded=False,
        exit_status=None,
        digest="",
        failure_reason=(
            f"Image '{anonymous_image.reference}' in the Containerfile refused: Destination '127.0.0.1' is not "
            "allowed: it resolves to a private or local address (set WAVE_SSRF_ALLOW=127.0.0.1 to allow it)"
        ),
    )
    assert log.text == ""
    assert not (data_dir / "builds").exists()  # no work dir was even made


@pytest.mark.slow
def test_the_cache_repository_serves_a_second_build(anonymous_image: PushedImage, data_dir: Path) -> None:
    host = anonymous_image.registry.host
    cache = f"{host}/wave/cache-{uuid.uuid4().hex[:8]}"
    container_file = f"FROM {anonymous_image.reference}\nRUN echo cache-probe > /probe; cat /probe\n"
    first_log, second_log = Log(), Log()

    first = build(make_job(host, container_file, cache_repository=cache), first_log)
    second = build(make_job(host, container_file, cache_repository=cache), second_log)

    assert first.succeeded
    assert second.succeeded
    assert "\ncache-probe\n" in first_log.text
    assert f"--> Pushing cache {cache}:" in first_log.text
    assert f"--> Cache pulled from remote {cache}:" in second_log.text
    assert "--> Using cache " in second_log.text
    assert "\ncache-probe\n" not in second_log.text  # the RUN step did not run again
    assert_nothing_left(data_dir)


def test_cross_platform_run_without_emulation_fails_at_once(
    anonymous_image: PushedImage, data_dir: Path, tmp_path: Path
) -> None:
    binfmt = tmp_path / "binfmt_misc"  # a host without any handler
    job = make_job(
        anonymous_image.registry.host,
        f"FROM {anonymous_image.reference}\nRUN true\n",
        platform=Platform("linux", FOREIGN_ARCH),
    )
    log = Log()
    started = time.monotonic()
    outcome = BuildahBuilder(binfmt_dir=binfmt).build(job, log=log, should_stop=lambda: False)
    assert time.monotonic() - started < 1
    assert outcome == BuildOutcome(
        succeeded=False,
        exit_status=None,
        digest="",
        failure_reason=(
            f"Cannot run the Containerfile's RUN steps for linux/{FOREIGN_ARCH} on this {HOST.arch} build worker: "
            f"no emulator is registered ({binfmt}/qemu-{FOREIGN_QEMU} is missing); "
            "install qemu-user-static and binfmt-support on the worker"
        ),
    )
    assert log.text == ""
    assert not (data_dir / "builds").exists()


def test_emulation_is_found_only_when_its_handler_is_enabled(tmp_path: Path) -> None:
    parsed = containerfile_parse("FROM busybox\nRUN true\n", target=Platform("linux", FOREIGN_ARCH), host=HOST)
    handler = tmp_path / f"qemu-{FOREIGN_QEMU}"
    handler.write_text("disabled\ninterpreter /usr/libexec/qemu-binfmt/x\n")
    assert "no emulator is registered" in emulation_missing(parsed, binfmt_dir=tmp_path)
    handler.write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/x\n")
    assert emulation_missing(parsed, binfmt_dir=tmp_path) == ""
    native = containerfile_parse("FROM busybox\nRUN true\n", target=HOST, host=HOST)
    assert emulation_missing(native, binfmt_dir=tmp_path / "none") == ""


@pytest.mark.slow
def test_cross_platform_build_without_run_steps_needs_no_emulation(
    multiplatform_image: PushedImage, data_dir: Path, tmp_path: Path
) -> None:
    job = make_job(
        multiplatform_image.registry.host,
        f"FROM {multiplatform_image.reference}\nENV BUILT_FOR={FOREIGN_ARCH}\n",
        platform=Platform("linux", FOREIGN_ARCH),
    )
    outcome = BuildahBuilder(binfmt_dir=tmp_path / "none").build(job, log=Log(), should_stop=lambda: False)
    assert outcome.succeeded, outcome.failure_reason
    config = skopeo_inspect(job.target, config=True)
    assert config["architecture"] == FOREIGN_ARCH
    assert f"BUILT_FOR={FOREIGN_ARCH}" in config["config"]["Env"]
    assert_nothing_left(data_dir)


@pytest.mark.slow
def test_network_none_cuts_run_steps_off_the_network(anonymous_image: PushedImage, data_dir: Path) -> None:
    container_file = f"FROM {anonymous_image.reference}\nRUN cat /proc/net/dev\n"
    job = make_job(anonymous_image.registry.host, container_file, network="none")
    job = replace(job, cache_repository=f"{anonymous_image.registry.host}/wave/cache-offline")
    log = Log()
    outcome = build(job, log)
    assert outcome.succeeded, outcome.failure_reason
    interfaces = re.findall(r"^\s*([\w.-]+):\s+\d", log.text, flags=re.MULTILINE)
    assert interfaces == ["lo"]
    assert "the layer cache is not used" in log.text
    assert "Pushing cache" not in log.text
    assert outcome.digest == skopeo_inspect(job.target)["Digest"]
    assert_nothing_left(data_dir)


def test_a_network_chroot_isolation_cannot_give_is_refused_at_once(
    anonymous_image: PushedImage, data_dir: Path
) -> None:
    job = make_job(anonymous_image.registry.host, f"FROM {anonymous_image.reference}\n", network="private")
    outcome = build(job)
    assert outcome.failure_reason == (
        "Build network 'private' is not supported by buildah with chroot isolation: use 'filtered', 'host' or 'none'"
    )
    assert not (data_dir / "builds").exists()


def test_work_dir_remove_unmounts_what_is_left_below_it(data_dir: Path) -> None:
    work = work_dir_create("bd-0123456789abcdef_2")
    mount_point = work.root / "storage" / "vfs" / "dir with space"
    mount_point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount_point)], check=True, timeout=30)
    (mount_point / "file").write_text("x")
    assert str(work.root) in Path("/proc/self/mountinfo").read_text().replace("\\040", " ")

    work_dir_remove(work)

    assert not work.root.exists()
    assert_nothing_left(data_dir)


def test_the_auth_file_covers_every_from_host_the_build_and_the_cache_repository(settings) -> None:
    settings.WAVE_INSECURE_REGISTRIES = ["127.0.0.1:7", "127.0.0.1:9"]
    known = {"127.0.0.1:7": Credentials("from-user", "from-pass"), "127.0.0.1:8": Credentials("cache-user", "c-pass")}
    asked: list[str] = []

    def credentials(host: str) -> Credentials | None:
        asked.append(host)
        return known.get(host)

    container_file = "FROM 127.0.0.1:7/a\nFROM 127.0.0.1:7/b\nCOPY --from=127.0.0.1:6/c /c /c\n"
    job = make_job("127.0.0.1:9", container_file, credentials=credentials, cache_repository="127.0.0.1:8/cache")
    plan = build_plan(job, binfmt_dir=Path("/nonexistent"))
    assert asked == ["127.0.0.1:7", "127.0.0.1:6", "127.0.0.1:9", "127.0.0.1:8"]
    assert plan.auth == {
        "auths": {
            "127.0.0.1:7": {"auth": base64.b64encode(b"from-user:from-pass").decode()},
            "127.0.0.1:8": {"auth": base64.b64encode(b"cache-user:c-pass").decode()},
        }
    }
    assert plan.insecure == ["127.0.0.1:7", "127.0.0.1:9"]  # plain http for those only


BUILD_IN_A_CHILD = """
import sys, django
django.setup()
from builds.backends import BuildJob, builder
from builds.containerfiles import host_architecture
from registry.platform import Platform
job = BuildJob(build_id="bd-killed_1", container_file=sys.argv[1], context_dir=None,
               platform=Platform("linux", host_architecture()), target=sys.argv[2], cache_repository=None,
               credentials=lambda host: None, timeout=120)
builder().build(job, log=lambda text: print(text, end="", flush=True), should_stop=lambda: False)
"""


@pytest.mark.slow
def test_a_worker_killed_mid_build_takes_its_build_along_and_the_sweep_removes_the_work_dir(
    anonymous_image: PushedImage, data_dir: Path
) -> None:
    container_file = f"FROM {anonymous_image.reference}\nRUN echo running; sleep 65\n"
    target = f"{anonymous_image.registry.host}/wave/build:killed"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "WAVE_DATA_DIR": str(data_dir)}
    worker = subprocess.Popen(
        [sys.executable, "-c", BUILD_IN_A_CHILD, container_file, target], stdout=subprocess.PIPE, env=env, text=True
    )
    assert worker.stdout is not None
    for line in worker.stdout:
        if line == "running\n":
            break
    assert processes_mentioning("sleep 65") != []
    [slirp] = slirp_children(worker.pid)  # the default network, filtered
    worker.kill()
    worker.wait()
    worker.stdout.close()
    deadline = time.monotonic() + 5
    while (processes_mentioning("sleep 65", str(data_dir)) or alive(slirp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning("sleep 65", str(data_dir)) == []
    assert not alive(slirp)  # its --exit-fd closed with the worker
    [left] = (data_dir / "builds").iterdir()  # nobody removed it: the sweep does

    assert work_dirs_sweep(older_than=3600) == []  # a recent one may be another worker's running build
    assert work_dirs_sweep(older_than=0) == [left]
    assert_nothing_left(data_dir)


@pytest.mark.slow
def test_a_full_disk_fails_with_one_line(anonymous_image: PushedImage, data_dir: Path) -> None:
    data_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(data_dir)], check=True, timeout=30)
    try:
        outcome = build(make_job(anonymous_image.registry.host, f"FROM {anonymous_image.reference}\nRUN true\n"))
        assert not outcome.succeeded
        assert outcome.exit_status == 125
        assert outcome.failure_reason.endswith("no space left on device"), outcome.failure_reason
        assert "\n" not in outcome.failure_reason
        assert list((data_dir / "builds").iterdir()) == []
    finally:
        subprocess.run(["umount", str(data_dir)], check=True, timeout=30)
    assert_nothing_left(data_dir)


def test_output_sends_whole_lines_at_once_and_a_partial_line_within_a_second() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    log = Log()
    output = Output(log, secrets=["hunter22"])
    try:
        os.write(write_end, b"STEP 1/1: RUN echo hunter22\nprogress 5")
        output.read(read_end, timeout=1)
        assert log.chunks == ["STEP 1/1: RUN echo ***\n"]
        started = time.monotonic()
        while len(log.chunks) < 2 and time.monotonic() - started < 3:
            output.read(read_end, timeout=0.2)
        assert log.chunks[1:] == ["progress 5"]
        assert 0.8 <= time.monotonic() - started < 1.5
        os.write(write_end, b"0%\nError: pushing: unauthorized\n")
        os.close(write_end)
        while output.read(read_end, timeout=1):
            pass
        assert log.text == "STEP 1/1: RUN echo ***\nprogress 50%\nError: pushing: unauthorized\n"
        assert output.last_error == "pushing: unauthorized"
    finally:
        output.close()
        os.close(read_end)


def test_error_summary_is_one_line_without_go_values_and_keeps_the_cause() -> None:
    assert error_summary(
        'building at STEP "RUNN ": Build error: Unknown instruction: "RUNN" &imagebuilder.Step{Env:[]}'
    ) == ('error building at STEP "RUNN ": Build error: Unknown instruction: "RUNN"')
    long = "pushing image: " + "x" * 1000 + ": unauthorized: authentication required"
    summary = error_summary(long)
    assert len(summary) == 400
    assert summary.startswith("error pushing image: xxx")
    assert summary.endswith("xxx: unauthorized: authentication required")
    assert error_summary("unshare: failed to execute buildah: No such file or directory") == (
        "unshare: failed to execute buildah: No such file or directory"
    )
