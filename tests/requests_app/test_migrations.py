"""Data migrations of container requests, run forwards on rows an older version stored."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("requests_app", "0002_injectedlayer_finished_at")]
AFTER = [("requests_app", "0004_layerdownload_existing_layers")]


def migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection)


def test_layers_stored_before_downloads_were_rows_get_one_download_each() -> None:
    old = migrate(BEFORE).loader.project_state(BEFORE).apps
    try:
        request = old.get_model("requests_app", "ContainerRequest").objects.create(
            token="aaaaaaaaaaaa", source_image="a/b:1", target_image="x",
            expires_at=timezone.now() + dt.timedelta(hours=1),
        )  # fmt: skip
        layers = old.get_model("requests_app", "InjectedLayer").objects

        def layer(position: int, url: str, state: str, **fields: object) -> None:
            digests = {"gzip_digest": "sha256:" + "1" * 64, "tar_digest": "sha256:" + "2" * 64}
            layers.create(request=request, position=position, kind="http", url=url, gzip_size=10, state=state,
                          **digests, **fields)  # fmt: skip

        layer(0, "https://e.org/ready", "ready", blob_key="blobs/sha256/11/1", finished_at=timezone.now())
        layer(1, "https://e.org/ready", "pending")  # the old code settled these with the first
        layer(2, "https://e.org/stranded", "pending")  # its message was lost with a killed worker
        layer(3, "https://e.org/failed", "failed", failure_reason="HTTP 404", finished_at=timezone.now())
        layers.create(request=request, position=4, kind="data", gzip_size=1, gzip_digest="d", tar_digest="t",
                      state="ready")  # fmt: skip

        new = migrate(AFTER).loader.project_state(AFTER).apps
        downloads = {d.url: d for d in new.get_model("requests_app", "LayerDownload").objects.all()}
        rows = new.get_model("requests_app", "InjectedLayer").objects.order_by("position")
        assert sorted(downloads) == ["https://e.org/failed", "https://e.org/ready", "https://e.org/stranded"]
        assert [(d.state, d.blob_key, d.failure_reason) for _, d in sorted(downloads.items())] == [
            ("failed", "", "HTTP 404"), ("ready", "blobs/sha256/11/1", ""), ("queued", "", ""),
        ]  # fmt: skip
        stranded = downloads["https://e.org/stranded"]
        assert stranded.queued_at < timezone.now() - dt.timedelta(hours=1)  # the reaper sends it at once
        assert [(row.state, row.download.url if row.download else None) for row in rows] == [
            ("ready", "https://e.org/ready"), ("ready", "https://e.org/ready"), ("pending", "https://e.org/stranded"),
            ("failed", "https://e.org/failed"), ("ready", None),
        ]  # fmt: skip
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
