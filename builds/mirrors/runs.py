"""One run of a mirror, the task's body: claim, copy with heartbeats and a live log, finish.

Idempotent as a build's run (builds.runs): a mirror that is not pending is left alone; one cancelled meanwhile,
or taken back by the reaper, stops before its next blob or manifest; a worker that stops gives it back.
"""

from __future__ import annotations

import functools
import logging

from django.conf import settings

from builds.models import Build
from builds.runs import LogSink, build_credentials
from builds.services import build_claim, build_finish, build_give_back, build_heartbeat
from credentials.clients import registry_client
from registry.client import RegistryError
from registry.platform import parse_platform
from registry.push import CopyStopped, image_copy
from registry.reference import parse_image
from wave_site.errors import unexpected_error_message
from wave_site.jobs import heartbeat, is_worker_stopping, release_connection

logger = logging.getLogger(__name__)


def mirror_run(*, build_pk: int) -> str:
    """Claim, copy, finish; the state left."""
    claim = build_claim(build_pk=build_pk)
    if claim is None:
        return _state_of(build_pk)
    mirror = Build.objects.get(pk=build_pk)
    sink = LogSink(mirror)
    beat = functools.partial(build_heartbeat, build_pk=build_pk, claim=claim)
    give_back = functools.partial(build_give_back, build_pk=build_pk, claim=claim)
    digest, reason = "", ""
    try:
        # Source with the caller's credentials, target with theirs too (or the service's for its own repository).
        client = registry_client().for_credentials(build_credentials(mirror))
        with heartbeat(beat, every=settings.WAVE_BUILD_HEARTBEAT, give_back=give_back) as lost:
            release_connection()  # none held through the copy
            digest = image_copy(
                client, source=parse_image(mirror.source_image), target=parse_image(mirror.target_image),
                platform=parse_platform(mirror.platform) if mirror.platform else None, log=sink,
                should_stop=lost.is_set,
            )  # fmt: skip
    except CopyStopped:
        sink.close()
        if not is_worker_stopping():
            logger.warning("mirror %s stopped: cancelled, or its claim was taken", mirror.build_id)
        return _state_of(build_pk)
    except RegistryError as exc:
        reason = f"Mirror failed: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - a claimed mirror must end with a reason; the traceback goes to the log
        reason = f"Mirror failed: {unexpected_error_message(exc)}"
    if reason:
        sink(reason + "\n")
        logger.warning("mirror %s failed: %s", mirror.build_id, reason)
    sink.close()
    build_finish(build_pk=build_pk, claim=claim, succeeded=not reason, digest=digest, reason=reason)
    return _state_of(build_pk)


def _state_of(build_pk: int) -> str:
    return Build.objects.filter(pk=build_pk).values_list("state", flat=True).first() or "gone"
