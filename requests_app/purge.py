"""The purge of old rows in constant memory: expired requests and their layers, unused finished downloads,
builds past retention, then the Tower sessions no request needs.

Each kind is deleted in batches by primary-key range with plain SQL (children first: Django's foreign keys
have no ON DELETE CASCADE in the schema), each batch its own short transaction, so that the API keeps
answering meanwhile and no row is ever loaded into Python. A batch's upper bound is the `batch_size`-th
matching key, and the whole run stops at the largest key that matched when it began: rows created during the
run are never looked at. The beat task and `manage.py purge` both call `expired_purge`.

Builds: a finished build older than WAVE_BUILD_RETENTION_DAYS goes unless it is the newest of its
containerId or of its target image. The newest of a containerId keeps build numbers increasing (a purged
number taken again would name a new build like an old one, whose log blobs may still exist), and the newest
of a target is what a cached request for that target answers with (and whose credential scope it checks);
so one row per target built stays, whatever its age. Only rows: log blobs are the blob collector's.
"""

# SQL here is built from model table names quoted by the backend and constant text; values are parameters.
# ruff: noqa: S608

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from builds.models import Build
from credentials.sessions import tower_sessions_purge
from requests_app.models import ContainerRequest, InjectedLayer, LayerDownload

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 5000


@dataclass(frozen=True)
class PurgeCounts:
    """Rows deleted (or, in a dry run, that would be) by kind."""

    requests: int = 0
    layers: int = 0
    downloads: int = 0
    builds: int = 0
    tower_sessions: int = 0
    credential_lookups: int = 0


@dataclass(frozen=True)
class _Kind:
    """A table purged by key range: `where` selects its purgeable rows (SQL naming the table itself, `%s`
    parameters `params`); `children` are (table, foreign key column) rows deleted first."""

    name: str
    table: str
    where: str
    params: tuple[Any, ...]
    children: tuple[tuple[str, str], ...] = ()


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _kinds(*, request_cutoff: dt.datetime, build_cutoff: dt.datetime) -> list[_Kind]:
    requests, layers = _q(ContainerRequest._meta.db_table), _q(InjectedLayer._meta.db_table)
    downloads, builds = _q(LayerDownload._meta.db_table), _q(Build._meta.db_table)
    request_cutoff_value = connection.ops.adapt_datetimefield_value(request_cutoff)
    build_cutoff_value = connection.ops.adapt_datetimefield_value(build_cutoff)
    finished_downloads = (LayerDownload.State.READY, LayerDownload.State.FAILED)
    return [
        _Kind("requests", requests, f"{requests}.expires_at < %s", (request_cutoff_value,),
              children=((layers, "request_id"),)),
        # Finished long ago and joined by no layer of a request that stays (once the requests are purged, by
        # no layer at all; a request joining it meanwhile makes the delete skip it, or fail the batch on the
        # foreign key: see _purge_batch).
        _Kind("downloads", downloads,
              f"{downloads}.state IN (%s, %s) AND {downloads}.finished_at < %s"
              f" AND NOT EXISTS (SELECT 1 FROM {layers} INNER JOIN {requests} ON {requests}.id = {layers}.request_id"
              f" WHERE {layers}.download_id = {downloads}.id AND {requests}.expires_at >= %s)",
              (*finished_downloads, request_cutoff_value, request_cutoff_value)),
        _Kind("builds", builds,
              f"{builds}.state IN (%s, %s, %s) AND {builds}.finished_at < %s"
              f" AND EXISTS (SELECT 1 FROM {builds} newer WHERE newer.container_id = {builds}.container_id"
              f" AND newer.number > {builds}.number)"
              f" AND EXISTS (SELECT 1 FROM {builds} newer WHERE newer.target_image = {builds}.target_image"
              f" AND newer.id > {builds}.id)",
              (*Build.FINISHED, build_cutoff_value)),
    ]  # fmt: skip


def _scalar(sql: str, params: tuple[Any, ...]) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _count(kind: _Kind) -> tuple[int, int]:
    """(rows, children rows) a purge of `kind` would delete now."""
    rows = _scalar(f"SELECT COUNT(*) FROM {kind.table} WHERE {kind.where}", kind.params) or 0
    children = 0
    for table, column in kind.children:
        selected = f"SELECT {kind.table}.id FROM {kind.table} WHERE {kind.where}"
        children += _scalar(f"SELECT COUNT(*) FROM {table} WHERE {column} IN ({selected})", kind.params) or 0
    return rows, children


def _purge_batch(kind: _Kind, low: int, high: int) -> tuple[int, int]:
    """Delete `kind`'s rows with keys in (low, high] and their children in one transaction; (rows, children)."""
    in_range = f"{kind.table}.id > %s AND {kind.table}.id <= %s AND {kind.where}"
    params = (low, high, *kind.params)
    children = 0
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            for table, column in kind.children:
                selected = f"SELECT {kind.table}.id FROM {kind.table} WHERE {in_range}"
                cursor.execute(f"DELETE FROM {table} WHERE {column} IN ({selected})", params)
                children += cursor.rowcount
            cursor.execute(f"DELETE FROM {kind.table} WHERE {in_range}", params)
            rows = cursor.rowcount
    except IntegrityError:
        # A row came into use between the statement's snapshot and its commit (Postgres checks Django's
        # deferred foreign keys at commit): nothing of this batch is deleted, the next run tries again.
        logger.warning("purge of %s %d..%d skipped: a row came into use meanwhile", kind.name, low + 1, high)
        return 0, 0
    return rows, children


def _purge(kind: _Kind, *, batch_size: int, on_batch: Callable[[str, int], None] | None) -> tuple[int, int]:
    """Delete every purgeable row of `kind` that exists now, `batch_size` at a time; (rows, children)."""
    last = _scalar(f"SELECT MAX({kind.table}.id) FROM {kind.table} WHERE {kind.where}", kind.params)
    if last is None:
        return 0, 0
    low, rows, children = 0, 0, 0
    while low < last:
        high = _scalar(
            f"SELECT MAX(id) FROM (SELECT {kind.table}.id AS id FROM {kind.table}"
            f" WHERE {kind.table}.id > %s AND {kind.table}.id <= %s AND {kind.where}"
            f" ORDER BY {kind.table}.id LIMIT %s) batch",
            (low, last, *kind.params, batch_size),
        )
        if high is None:
            break
        deleted, deleted_children = _purge_batch(kind, low, high)
        rows, children, low = rows + deleted, children + deleted_children, high
        if on_batch is not None:
            on_batch(kind.name, deleted)
    return rows, children


def expired_purge(
    *,
    request_retention: dt.timedelta | None = None,
    build_retention: dt.timedelta | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    on_batch: Callable[[str, int], None] | None = None,
) -> PurgeCounts:
    """Purge what is past retention (or count it: `dry_run`); `on_batch(kind, rows)` is called after each batch."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    now = timezone.now()
    if request_retention is None:
        request_retention = dt.timedelta(days=settings.WAVE_REQUEST_RETENTION_DAYS)
    if build_retention is None:
        build_retention = dt.timedelta(days=settings.WAVE_BUILD_RETENTION_DAYS)
    request_cutoff, build_cutoff = now - request_retention, now - build_retention
    counts: dict[str, int] = {}
    for kind in _kinds(request_cutoff=request_cutoff, build_cutoff=build_cutoff):
        rows, children = _count(kind) if dry_run else _purge(kind, batch_size=batch_size, on_batch=on_batch)
        counts[kind.name] = rows
        if kind.name == "requests":
            counts["layers"] = children
    if not dry_run:
        # Tower sessions no remaining request pulls with and no pending or running build uses (a freeze or mirror
        # stores no request, and pushes with the caller's login), and old credential lookups, go (few rows).
        by_requests = ContainerRequest.objects.filter(tower_auth__isnull=False).order_by().values("tower_auth_id")
        by_builds = Build.objects.filter(state__in=Build.ACTIVE, tower_auth__isnull=False).order_by()
        in_use = by_requests.union(by_builds.values("tower_auth_id"))
        counts["tower_sessions"], counts["credential_lookups"] = tower_sessions_purge(
            created_before=request_cutoff, in_use=in_use
        )
    result = PurgeCounts(**counts)
    if any(dataclasses.astuple(result)):
        logger.info("purge%s: %s", " (dry run)" if dry_run else "", result)
    return result
