"""Per-build resource limits (builds.backends.limits), with real buildah and this host's cgroups: a RUN step
past the memory limit fails the build with that reason, a fork flood stays under the process limit, a normal
build passes under the defaults; no build's group outlives it. The settings, sizes and cgroup files read."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from pytest_django.fixtures import Settings

from builds.backends import BuildJob, BuildOutcome, builder, limits
from builds.backends.limits import (
    PARENT,
    Hierarchy,
    build_cgroup_create,
    env_memory,
    env_pids,
    hierarchies,
    size_parse,
    size_text,
)
from tests.builds.test_backend_buildah import Log, make_job
from tests.conftest import PushedImage

MiB = 1024 * 1024


def located() -> dict[str, Hierarchy]:
    """This host's memory and pids hierarchies; the test is skipped where a build cannot have its cgroup."""
    found = hierarchies(limits.MOUNTINFO.read_text(), limits.OWN_CGROUP.read_text())
    usable = {controller: where for controller, where in found.items() if isinstance(where, Hierarchy)}
    probe, reasons = build_cgroup_create("bd-probe_1", memory=256 * MiB, pids=128)
    probe.remove()
    if len(usable) < 2 or reasons:
        pytest.skip(f"cgroups for builds are not usable here: {found} {reasons}")
    return usable


def our_groups() -> list[Path]:
    """The build groups of this process (`<pid>-...`) in every hierarchy."""
    found = []
    where = hierarchies(Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text())
    for hierarchy in {hierarchy for hierarchy in where.values() if isinstance(hierarchy, Hierarchy)}:
        parent = hierarchy.base / PARENT
        if parent.is_dir():
            found += [path for path in parent.iterdir() if path.is_dir() and path.name.startswith(f"{os.getpid()}-")]
    return found


@pytest.fixture
def data_dir(settings: Settings, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return tmp_path / "data"


class Watched(Log):
    """The log, and what the build's groups held each time buildah printed something."""

    def __init__(self) -> None:
        super().__init__(self.look)
        self.samples: list[dict[str, str]] = []

    def look(self, text: str) -> None:
        sample = {}
        for group in our_groups():
            for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.max", "memory.swap.max",
                         "pids.max", "pids.current", "cgroup.procs"):  # fmt: skip
                if (group / name).exists():
                    sample[name] = (group / name).read_text().strip()
        self.samples.append(sample)

    def seen(self, name: str) -> set[str]:
        return {sample[name] for sample in self.samples if name in sample}


def memory_limits(log: Watched) -> set[str]:
    """The memory limits the build's group had (cgroup v1 or v2)."""
    return log.seen("memory.limit_in_bytes") | log.seen("memory.max")


def build(job: BuildJob, log: Log) -> BuildOutcome:
    return builder().build(job, log=log, should_stop=lambda: False)


@pytest.mark.slow
def test_a_run_step_past_the_memory_limit_fails_the_build_as_out_of_memory(
    anonymous_image: PushedImage, data_dir: Path, settings: Settings
) -> None:
    located()
    settings.WAVE_BUILD_MEMORY = 160 * MiB
    # dd holds a buffer of its block size: 400 MiB, touched as it reads.
    container_file = f"FROM {anonymous_image.reference}\nRUN dd if=/dev/zero of=/dev/null bs=400M count=1\n"
    log = Watched()

    outcome = build(make_job(anonymous_image.registry.host, container_file, network="host"), log)

    assert outcome.succeeded is False
    assert outcome.failure_reason == "Build ran out of memory (limit 160 MiB)"
    assert outcome.exit_status not in {None, 0}
    assert "STEP 2/2: RUN dd" in log.text
    assert memory_limits(log) == {str(160 * MiB)}  # buildah ran in its group, limited
    assert log.seen("memory.memsw.limit_in_bytes") | log.seen("memory.swap.max") <= {str(160 * MiB), "0"}
    assert any(sample.get("cgroup.procs") for sample in log.samples)
    assert "Resource limits not applied" not in log.text
    assert our_groups() == []


@pytest.mark.slow
def test_a_fork_flood_stays_under_the_process_limit(
    anonymous_image: PushedImage, data_dir: Path, settings: Settings
) -> None:
    located()
    settings.WAVE_BUILD_PIDS = 64
    flood = "i=0; while [ $i -lt 300 ]; do sleep 30 & i=$((i+1)); echo forked $i; done; exit 3"
    container_file = f"FROM {anonymous_image.reference}\nRUN {flood}\n"
    log = Watched()

    outcome = build(make_job(anonymous_image.registry.host, container_file, network="host"), log)

    forked = [int(count) for count in re.findall(r"^forked (\d+)$", log.text, re.MULTILINE)]
    assert forked, log.text  # the step ran
    assert max(forked) < 64  # buildah's own threads and processes count too
    assert outcome.succeeded is False
    assert outcome.failure_reason == "Build reached the process limit (64)"
    assert log.seen("pids.max") == {"64"}
    assert max(int(count) for count in log.seen("pids.current")) <= 64
    assert our_groups() == []


@pytest.mark.slow
def test_a_build_under_the_default_limits_succeeds_in_a_group_of_its_own(
    anonymous_image: PushedImage, data_dir: Path, settings: Settings
) -> None:
    located()
    defaults = (settings.WAVE_BUILD_MEMORY, settings.WAVE_BUILD_PIDS)
    assert defaults == (size_parse("8g"), 4096)
    container_file = f"FROM {anonymous_image.reference}\nRUN echo $(( 6 * 7 )) && cat /proc/self/cgroup\n"
    log = Watched()

    outcome = build(make_job(anonymous_image.registry.host, container_file, network="host"), log)

    assert outcome.succeeded, outcome.failure_reason
    assert "\n42\n" in log.text
    assert memory_limits(log) == {str(8 * 1024 * MiB)}
    assert log.seen("pids.max") == {"4096"}
    group = rf"{PARENT}/{os.getpid()}-bd-0123456789abcdef_1-\w+"
    joined = re.findall(rf"^\d+:([\w,=]*):/(?:.*/)?{group}$", log.text, re.MULTILINE)  # the step's /proc/self/cgroup
    assert set(joined) in ({"memory", "pids"}, {""})  # v1: in both hierarchies; v2: its one group
    assert "Resource limits not applied" not in log.text
    assert our_groups() == []


@pytest.mark.slow
def test_a_cancelled_build_leaves_no_group(anonymous_image: PushedImage, data_dir: Path) -> None:
    located()
    log = Watched()
    container_file = f"FROM {anonymous_image.reference}\nRUN echo started && sleep 600\n"

    outcome = builder().build(
        make_job(anonymous_image.registry.host, container_file, network="host"),
        log=log,
        should_stop=lambda: "\nstarted\n" in log.text,
    )

    assert outcome.failure_reason == "Build cancelled"
    assert log.seen("pids.max") == {"4096"}
    assert our_groups() == []


@pytest.mark.slow
def test_where_cgroups_cannot_be_used_the_build_runs_and_its_log_says_why(
    anonymous_image: PushedImage,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A host whose cgroup file systems are not mounted (as a container without them sees it)."""
    mountinfo = tmp_path / "mountinfo"
    lines = limits.MOUNTINFO.read_text().splitlines()
    mountinfo.write_text("".join(f"{line}\n" for line in lines if " - cgroup" not in line))
    monkeypatch.setattr(limits, "MOUNTINFO", mountinfo)
    container_file = f"FROM {anonymous_image.reference}\nRUN echo built\n"
    log = Log()

    with caplog.at_level(logging.WARNING, logger="builds.backends.limits"):
        outcome = build(make_job(anonymous_image.registry.host, container_file, network="host"), log)

    assert outcome.succeeded, outcome.failure_reason
    reason = (
        "memory (8 GiB): no cgroup hierarchy with the memory controller is mounted; processes (4096): no cgroup "
        "hierarchy with the pids controller is mounted"
    )
    assert log.chunks[0] == f"Resource limits not applied, the build runs without them: {reason}\n"
    assert log.text.count("Resource limits not applied") == 1
    assert [record.getMessage() for record in caplog.records] == [
        f"build bd-0123456789abcdef_1: resource limits not applied: {reason}"
    ]


def test_no_limits_no_group_and_no_log_line(settings: Settings) -> None:
    cgroup, reasons = build_cgroup_create("bd-1", memory=0, pids=0)
    assert (cgroup.groups, cgroup.prefix(), reasons) == ((), [], [])


def test_a_group_is_removed_with_the_processes_left_in_it() -> None:
    """Whatever a build left running in its group is killed, then the group removed."""
    located()
    cgroup, reasons = build_cgroup_create("bd-left_1", memory=256 * MiB, pids=128)
    assert reasons == []
    assert {controller for controller, _ in cgroup.groups} == {"memory", "pids"}
    left = subprocess.Popen([*cgroup.prefix(), "sh", "-c", "sleep 600 & sleep 600"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(cgroup.directories[0].joinpath("cgroup.procs").read_text().split()) < 2:
            assert time.monotonic() < deadline, "the command did not join its group"
            time.sleep(0.05)
        for directory in cgroup.directories:
            assert str(left.pid) in (directory / "cgroup.procs").read_text().split()

        cgroup.remove()

        assert left.wait(timeout=10) == -signal.SIGKILL
        assert [directory for directory in cgroup.directories if directory.exists()] == []
        assert our_groups() == []
    finally:
        if left.poll() is None:
            os.killpg(left.pid, signal.SIGKILL)
            left.wait()


def test_a_limit_this_host_cannot_apply_leaves_the_other_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if {hierarchy.version for hierarchy in located().values()} != {1}:
        pytest.skip("cgroup v1 only: the memory and pids controllers in hierarchies of their own")
    mountinfo = tmp_path / "mountinfo"
    lines = limits.MOUNTINFO.read_text().splitlines()
    mountinfo.write_text("".join(f"{line}\n" for line in lines if not line.endswith(("rw,pids", ",pids"))))
    monkeypatch.setattr(limits, "MOUNTINFO", mountinfo)

    cgroup, reasons = build_cgroup_create("bd-half_1", memory=256 * MiB, pids=128)
    try:
        [reason] = reasons  # "no cgroup hierarchy with ...", or here, where cgroup v2 is mounted beside v1:
        assert reason.startswith("processes (128): the pids controller is not enabled for the worker's cgroup ")
        assert [controller for controller, _ in cgroup.groups] == ["memory"]
        [directory] = cgroup.directories
        assert (directory / "memory.limit_in_bytes").read_text() == f"{256 * MiB}\n"  # cgroup v1: this host
    finally:
        cgroup.remove()
    assert our_groups() == []


def test_a_failed_build_without_limit_events_keeps_its_own_reason() -> None:
    located()
    cgroup, _ = build_cgroup_create("bd-fine_1", memory=256 * MiB, pids=128)
    try:
        assert cgroup.failure_reason() == ""
    finally:
        cgroup.remove()
    assert our_groups() == []


@pytest.mark.parametrize(
    ("text", "size"),
    [("4g", 4 * 1024**3), ("512M", 512 * MiB), ("64MiB", 64 * MiB), ("64mb", 64 * MiB), ("1.5g", 1536 * MiB),
     ("1048576", MiB), ("2k", 2048), (" 1T ", 1024**4), ("0", 0)],
)  # fmt: skip
def test_size_parse_reads_binary_units(text: str, size: int) -> None:
    assert size_parse(text) == size


@pytest.mark.parametrize("text", ["", "g", "4 gigabytes", "-1g", "4x", "1e9", "0x10"])
def test_size_parse_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        size_parse(text)


@pytest.mark.parametrize(
    ("size", "text"),
    [(8 * 1024**3, "8 GiB"), (64 * MiB, "64 MiB"), (1536 * MiB, "1.5 GiB"), (2048, "2 KiB"), (512, "512 bytes")],
)
def test_size_text(size: int, text: str) -> None:
    assert size_text(size) == text


def test_settings_defaults_and_no_limit() -> None:
    assert env_memory({}) == 8 * 1024**3
    assert env_pids({}) == 4096
    assert env_memory({"WAVE_BUILD_MEMORY": "0"}) == 0
    assert env_memory({"WAVE_BUILD_MEMORY": " "}) == 8 * 1024**3  # empty: the default, as every setting
    assert env_memory({"WAVE_BUILD_MEMORY": "2g"}) == 2 * 1024**3
    assert env_pids({"WAVE_BUILD_PIDS": "0"}) == 0
    assert env_pids({"WAVE_BUILD_PIDS": "500"}) == 500


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"WAVE_BUILD_MEMORY": "lots"},
            "WAVE_BUILD_MEMORY must be a size such as 4g or 512m (0: no limit), got 'lots'",
        ),
        ({"WAVE_BUILD_MEMORY": "4096"}, "WAVE_BUILD_MEMORY must be 0 (no limit) or at least 128 MiB, got '4096'"),
        ({"WAVE_BUILD_PIDS": "many"}, "WAVE_BUILD_PIDS must be an integer (0: no limit), got 'many'"),
        ({"WAVE_BUILD_PIDS": "-1"}, "WAVE_BUILD_PIDS must be 0 (no limit) or at least 64, got -1"),
        ({"WAVE_BUILD_PIDS": "10"}, "WAVE_BUILD_PIDS must be 0 (no limit) or at least 64, got 10"),
    ],
)
def test_settings_refuse_bad_values_naming_the_variable(environ: dict[str, str], message: str) -> None:
    read = env_memory if "WAVE_BUILD_MEMORY" in environ else env_pids
    with pytest.raises(ImproperlyConfigured) as raised:
        read(environ)
    assert str(raised.value) == message


V1_MOUNTINFO = """\
25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
40 35 0:35 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 35 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
42 35 0:37 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
43 35 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUP = "9:pids:/system.slice/wave.service\n4:memory:/system.slice/wave.service\n2:cpu,cpuacct:/\n0::/\n"
CONTAINER_MOUNTINFO = """\
600 500 0:40 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
601 500 0:41 /docker/abc /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
"""
CONTAINER_CGROUP = "4:memory:/docker/abc\n3:pids:/docker/abc\n"


def test_hierarchies_on_cgroup_v1_are_below_the_workers_own_group_in_each() -> None:
    assert hierarchies(V1_MOUNTINFO, V1_CGROUP) == {
        "memory": Hierarchy(1, Path("/sys/fs/cgroup/memory/system.slice/wave.service")),
        "pids": Hierarchy(1, Path("/sys/fs/cgroup/pids/system.slice/wave.service")),
    }
    # A container sees its own group as the root of the mount.
    assert hierarchies(CONTAINER_MOUNTINFO, CONTAINER_CGROUP) == {
        "memory": Hierarchy(1, Path("/sys/fs/cgroup/memory")),
        "pids": Hierarchy(1, Path("/sys/fs/cgroup/pids")),
    }


def test_hierarchies_on_cgroup_v2_need_the_controllers_delegated(tmp_path: Path) -> None:
    worker = tmp_path / "system.slice" / "wave.service"
    worker.mkdir(parents=True)
    (worker / "cgroup.controllers").write_text("cpu io memory pids\n")
    mountinfo = f"30 25 0:26 / {tmp_path} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    expected = Hierarchy(2, worker)
    assert hierarchies(mountinfo, "0::/system.slice/wave.service\n") == {"memory": expected, "pids": expected}
    # Once the worker's processes moved to its leaf, the builds' groups stay beside it.
    assert hierarchies(mountinfo, "0::/system.slice/wave.service/wave-worker\n") == {
        "memory": expected,
        "pids": expected,
    }
    (worker / "cgroup.controllers").write_text("cpu io\n")
    assert hierarchies(mountinfo, "0::/system.slice/wave.service\n") == {
        "memory": f"the memory controller is not enabled for the worker's cgroup {worker}",
        "pids": f"the pids controller is not enabled for the worker's cgroup {worker}",
    }
    assert hierarchies("", "0::/\n") == {
        "memory": "no cgroup hierarchy with the memory controller is mounted",
        "pids": "no cgroup hierarchy with the pids controller is mounted",
    }
