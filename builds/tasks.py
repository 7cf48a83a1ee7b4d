"""Celery tasks of builds: a thin shell over builds.runs and builds.services (they take a primary key).

`builds.build_run` goes to the `builds` queue (CELERY_TASK_ROUTES); the reaper runs on `default` (beat's
options), so that it never waits behind the builds it watches. With the database down each logs one WARNING
line and ends (wave_site.jobs.outage_logged): the reaper sends or fails the build once it is back.
"""

from __future__ import annotations

import logging

from celery import shared_task

from builds.mirrors.runs import mirror_run
from builds.models import Build
from builds.runs import build_run
from builds.services import Reaped, build_reap
from wave_site.jobs import outage_logged

logger = logging.getLogger(__name__)


@shared_task(name="builds.build_run", ignore_result=True, acks_late=True)
def build_run_task(build_pk: int) -> str:
    state = "unknown"
    with outage_logged(f"build {build_pk} not run", then="the reaper sends it again"):
        # Mirrors are rows of builds too (builds.mirrors): the same task, queue and reaper run them.
        is_mirror = Build.objects.filter(pk=build_pk, kind=Build.Kind.MIRROR).exists()
        state = mirror_run(build_pk=build_pk) if is_mirror else build_run(build_pk=build_pk)
    return state


@shared_task(name="builds.build_reap", ignore_result=True)
def build_reap_task() -> tuple[int, int]:
    reaped = Reaped(failed=0, resent=0)
    with outage_logged("build reaper skipped", then="the next run reaps"):
        reaped = build_reap()
    return reaped.failed, reaped.resent
