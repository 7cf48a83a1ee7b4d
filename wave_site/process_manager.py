"""How `manage.py run` stops its processes: gently first, so that a stop is quick and quiet.

honcho's Manager sends SIGTERM to each process group, which reaches Celery's prefork children directly:
they die under the main process, which logs an ERROR for each, and the worker is killed with SIGKILL
five seconds later. Here a Celery worker's main process alone gets SIGTERM (its warm shutdown stops its
own children); the other processes' groups get SIGTERM as before. A worker still busy `COLD_AFTER`
seconds later gets SIGQUIT (cold shutdown: its late-acknowledged tasks are redelivered at the next start);
whatever still runs `KILL_AFTER` seconds after the stop began is killed, group and all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from honcho.manager import Manager

# An idle worker's warm shutdown takes ~5-7 s on the filesystem broker (a 2 s poll, its timer, its pool).
COLD_AFTER = 15.0
KILL_AFTER = 25.0


def _signal_process(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


class ServiceManager(Manager):  # type: ignore[misc]  # honcho is untyped
    """honcho's Manager with a warm shutdown for the processes named in `warm_shutdown` (Celery workers).

    Those get SIGTERM on their main process only, then SIGQUIT if still running at `COLD_AFTER`; every
    other process gets SIGTERM on its group, as with honcho. SIGKILL only at `KILL_AFTER`.
    """

    def __init__(self, *, warm_shutdown: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.warm_shutdown = warm_shutdown
        self._stop_started: float | None = None
        self._cold_sent = False
        self._kill_sent = False

    def _running(self) -> dict[str, int]:
        return {
            name: process["pid"]
            for name, process in self._processes.items()
            if "returncode" not in process and process.get("pid") is not None
        }

    def _killall(self, force: bool = False) -> None:
        if force:
            super()._killall(force=True)
            return
        self._stop_started = time.monotonic()
        for name, pid in self._running().items():
            if name in self.warm_shutdown:
                self._system_print(f"sending SIGTERM to {name} (pid {pid}; warm shutdown)\n")
                _signal_process(pid, signal.SIGTERM)
            else:
                self._system_print(f"sending SIGTERM to {name} (pid {pid})\n")
                _signal_group(pid, signal.SIGTERM)

    def kill(self) -> None:
        """Called by honcho's loop every 0.1 s once it waits for stragglers: escalate on our own timetable."""
        started = self._stop_started if self._stop_started is not None else time.monotonic()
        self._stop_started = started
        waited = time.monotonic() - started
        if waited >= KILL_AFTER:
            if not self._kill_sent:
                self._kill_sent = True
                super()._killall(force=True)
            return
        if waited >= COLD_AFTER and not self._cold_sent:
            self._cold_sent = True
            for name, pid in self._running().items():
                if name in self.warm_shutdown:
                    self._system_print(f"{name} still busy: sending SIGQUIT (cold shutdown) to pid {pid}\n")
                    _signal_process(pid, signal.SIGQUIT)

    def sweep(self) -> None:
        """After the loop: stop anything a process left behind in its group (a builder a task started)."""
        for process in self._processes.values():
            if process.get("pid") is not None:
                _signal_group(process["pid"], signal.SIGTERM)
