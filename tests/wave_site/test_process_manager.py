"""How `manage.py run` stops its processes (wave_site.process_manager): a warm shutdown for the worker,
SIGTERM to the other processes' groups, SIGQUIT to a worker still busy, SIGKILL last."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.network import wait_until
from tests.support.service import REPO

pytestmark = pytest.mark.slow

# Like a Celery worker: a main process with a child it stops itself on SIGTERM; the child reports a
# SIGTERM it receives directly (which is what made Celery log ERROR lines).
WORKER = """
import os, signal, sys, time
child = os.fork()
if child == 0:
    signal.signal(signal.SIGTERM, lambda *_: (print("child got SIGTERM directly", flush=True), os._exit(1)))
    signal.signal(signal.SIGUSR1, lambda *_: (print("child stopped by its main process", flush=True), os._exit(0)))
    while True:
        time.sleep(1)
def stop(*_):
    os.kill(child, signal.SIGUSR1)
    os.waitpid(child, 0)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("up", flush=True)
while True:
    time.sleep(1)
"""

# A process busy with a long task: ignores SIGTERM; ends on the signals listed in ENDS_ON, ignores the others.
BUSY = """
import signal, sys, time
for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
    signal.signal(signum, signal.SIG_IGN)
for signum in ENDS_ON:
    signal.signal(signum, lambda n, _: (print("ended by", signal.Signals(n).name, flush=True), sys.exit(0)))
print("up", flush=True)
while True:
    time.sleep(1)
"""


def python_process(tmp_path: Path, name: str, code: str) -> str:
    script = tmp_path / f"{name}.py"
    script.write_text(code)
    return f"exec {sys.executable} {script}"


def run_manager(tmp_path: Path, processes: dict[str, str], *, cold_after: float, kill_after: float) -> subprocess.Popen:
    script = tmp_path / "manager.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        from wave_site import process_manager
        process_manager.COLD_AFTER = {cold_after}
        process_manager.KILL_AFTER = {kill_after}
        manager = process_manager.ServiceManager(warm_shutdown=frozenset({{"worker"}}))
        for name, command in {processes!r}.items():
            manager.add_process(name, command)
        manager.loop()
        manager.sweep()
        sys.exit(manager.returncode or 0)
        """)
    )
    with (tmp_path / "manager.log").open("wb") as output:
        return subprocess.Popen(
            [sys.executable, str(script)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen, log: Path, *, started: int) -> tuple[float, str]:
    """SIGTERM to the manager's group once `started` processes said "up"; seconds until it exited, its output."""
    wait_until(lambda: log.read_text().count("| up\n") >= started, timeout=30, what="the processes to start")
    began = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)
    return time.monotonic() - began, log.read_text()


def test_worker_children_are_stopped_by_the_worker_and_other_groups_by_sigterm(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    processes = {
        "worker": python_process(tmp_path, "worker", WORKER),
        "web": f"sleep 300 & echo $! > {child_pid_file}; echo up; exec sleep 300",
    }
    process = run_manager(tmp_path, processes, cold_after=10, kill_after=20)
    elapsed, output = stop(process, tmp_path / "manager.log", started=2)
    assert elapsed < 3, output
    assert "sending SIGTERM to worker" in output
    assert "child stopped by its main process" in output
    assert "child got SIGTERM directly" not in output
    assert "SIGQUIT" not in output
    assert "SIGKILL" not in output
    assert process.returncode == 143  # stopped by SIGTERM, as honcho reports it
    assert not is_running(int(child_pid_file.read_text()))  # the web's whole group got SIGTERM


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit status may wait a moment for its new parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_busy_worker_gets_a_cold_shutdown_instead_of_sigkill(tmp_path: Path) -> None:
    processes = {
        "worker": python_process(tmp_path, "worker", BUSY.replace("ENDS_ON", "[signal.SIGQUIT]")),
        "web": "echo up; exec sleep 300",
    }
    process = run_manager(tmp_path, processes, cold_after=1, kill_after=30)
    elapsed, output = stop(process, tmp_path / "manager.log", started=2)
    assert "worker still busy: sending SIGQUIT (cold shutdown)" in output
    assert "ended by SIGQUIT" in output
    assert "SIGKILL" not in output
    assert elapsed < 10, output  # honcho's loop escalates from 5 s after the first process stopped


def test_process_ignoring_every_gentle_signal_is_killed_at_last(tmp_path: Path) -> None:
    processes = {"worker": python_process(tmp_path, "worker", BUSY.replace("ENDS_ON", "[]")),
                 "web": "echo up; exec sleep 300"}  # fmt: skip
    process = run_manager(tmp_path, processes, cold_after=1, kill_after=6)
    elapsed, output = stop(process, tmp_path / "manager.log", started=2)
    assert "worker still busy: sending SIGQUIT (cold shutdown)" in output
    assert output.count("sending SIGKILL to worker") == 1
    assert "worker stopped (rc=-9)" in output
    assert 6 <= elapsed < 12, output
