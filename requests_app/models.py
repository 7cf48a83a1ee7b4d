"""Container requests, the layers they inject, and the downloads that fetch http(s) layers."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from django.db import models
from django.utils import timezone


class ContainerRequest(models.Model):
    """One accepted request: its token authorises pulls of `target_image` until it expires or is revoked."""

    class ApiVersion(models.TextChoices):
        V1 = "v1", "v1 (/container-token)"
        V2 = "v2", "v2 (/v1alpha2/container)"

    token = models.CharField(max_length=12, unique=True)
    api_version = models.CharField(max_length=2, choices=ApiVersion.choices, default=ApiVersion.V1)
    source_image = models.CharField(max_length=1024, help_text="Normalised source image name.")
    target_image = models.CharField(max_length=1200)
    platform = models.CharField(max_length=32, default="linux/amd64")
    container_config = models.JSONField(
        default=dict, blank=True, help_text="entrypoint, cmd, env, workingDir (layers are rows of their own)."
    )
    fingerprint = models.CharField(max_length=256, blank=True, db_index=True)
    client_timestamp = models.CharField(max_length=64, blank=True, help_text="The client's own `timestamp`.")
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    tower_endpoint = models.CharField(max_length=512, blank=True)
    tower_workspace_id = models.BigIntegerField(null=True, blank=True)
    user_id = models.BigIntegerField(null=True, blank=True, help_text="Tower user, when the caller is known.")
    user_name = models.CharField(max_length=256, blank=True)
    user_email = models.CharField(max_length=320, blank=True)
    tower_auth = models.ForeignKey(
        "credentials.TowerAuth", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The Tower session whose registry credentials the proxy pulls with.",
    )  # fmt: skip
    build_id = models.CharField(max_length=128, blank=True, help_text="The build this request started or joined.")
    source_digest = models.CharField(max_length=80, blank=True)
    wave_digest = models.CharField(max_length=80, blank=True)
    generated_digests = models.JSONField(
        default=list, blank=True, help_text="Configs and manifests generated for this request: only it may read them."
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField(db_index=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # The admin's filters (requests_app.admin). Its searches' indexes on expressions (the image's trigrams, the
        # caller's name and e-mail in upper case) are Postgres only, made by migration 0007.
        indexes = [
            models.Index(fields=["source_image"]),
            models.Index(fields=["api_version", "created_at"], name="request_api_version_created"),
            models.Index(fields=["platform", "created_at"], name="request_platform_created"),
            models.Index(fields=["revoked_at"], name="request_revoked_at"),
        ]

    def __str__(self) -> str:
        return f"{self.token} ({self.source_image})"

    def is_active(self, now: dt.datetime | None = None) -> bool:
        """Neither expired nor revoked: the token still authorises pulls."""
        return self.revoked_at is None and self.expires_at > (now or timezone.now())


class LayerDownload(models.Model):
    """One fetch of one exact layer (URL, size, digests): a durable job shared by every layer that names it.

    Created or joined at request time (counted against the cap of the client that queued it), claimed by
    its task with a compare-and-set on `state`, kept alive by heartbeats while it runs, re-queued or failed
    by the reaper when its heartbeat goes stale, sent again with a doubling wait while nobody takes it.
    Finishing settles every pending InjectedLayer joined to it (requests_app.downloads).
    """

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        READY = "ready", "ready"
        FAILED = "failed", "failed"

    # A URL may be longer than a database index entry: uniqueness is on a digest of what is fetched.
    identity = models.CharField(max_length=64, unique=True, help_text="sha256 of URL, size and digests.")
    url = models.TextField()
    gzip_digest = models.CharField(max_length=80, db_index=True)
    gzip_size = models.BigIntegerField()
    tar_digest = models.CharField(max_length=80)
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Claims so far (reset on a retry).")
    claimed_by = models.CharField(max_length=200, blank=True, help_text="host:pid:nonce of the running attempt.")
    created_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(default=timezone.now, help_text="When it last entered the queue.")
    sent_at = models.DateTimeField(
        null=True, blank=True, help_text="When the reaper last sent it again (empty: sent once, when queued)."
    )
    resends = models.PositiveSmallIntegerField(
        default=0, help_text="Times the reaper sent it again since it last entered the queue (each wait doubles)."
    )
    client = models.CharField(
        max_length=300, blank=True, help_text="Who queued it (user:<id> or ip:<address>): counted against their cap."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    blob_key = models.CharField(max_length=200, blank=True, help_text="Path in the blob store once ready.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["client", "state"], name="layerdownload_client_state"),
            models.Index(fields=["created_at"], name="layerdownload_created"),  # the admin's order and dates
            models.Index(fields=["tar_digest"], name="layerdownload_tar_digest"),
        ]

    def __str__(self) -> str:
        return f"download {self.pk} ({self.gzip_digest[:19]}, {self.state})"

    @staticmethod
    def identity_of(*, url: str, gzip_size: int, gzip_digest: str, tar_digest: str) -> str:
        fetched = json.dumps([url, gzip_size, gzip_digest, tar_digest])
        return hashlib.sha256(fetched.encode()).hexdigest()


class InjectedLayer(models.Model):
    """A layer appended to the source image; its blob is content-addressed by gzip digest."""

    class Kind(models.TextChoices):
        DATA = "data", "inline data"
        HTTP = "http", "http(s) download"

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        READY = "ready", "ready"
        FAILED = "failed", "failed"

    request = models.ForeignKey(ContainerRequest, on_delete=models.CASCADE, related_name="layers")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=4, choices=Kind.choices)
    url = models.TextField(blank=True, help_text="Download URL; empty for data: layers (never stored inline).")
    gzip_digest = models.CharField(max_length=80)
    gzip_size = models.BigIntegerField()
    tar_digest = models.CharField(max_length=80)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING, db_index=True)
    failure_reason = models.TextField(blank=True)
    blob_key = models.CharField(max_length=200, blank=True, help_text="Path in the blob store once ready.")
    finished_at = models.DateTimeField(null=True, blank=True, help_text="When the layer became ready or failed.")
    download = models.ForeignKey(
        LayerDownload, null=True, blank=True, on_delete=models.PROTECT, related_name="layers",
        help_text="The download that fetches it (http layers).",
    )  # fmt: skip

    class Meta:
        ordering = ["request", "position"]
        constraints = [models.UniqueConstraint(fields=["request", "position"], name="unique_layer_position")]
        indexes = [  # the admin's searches by digest
            models.Index(fields=["gzip_digest"], name="injectedlayer_gzip_digest"),
            models.Index(fields=["tar_digest"], name="injectedlayer_tar_digest"),
        ]

    def __str__(self) -> str:
        return f"layer {self.position} of {self.request_id} ({self.gzip_digest[:19]})"


class GeneratedDocument(models.Model):
    """A config or manifest the proxy generated: bytes in the blob store under `digest`, served by digest."""

    digest = models.CharField(max_length=80, unique=True)
    media_type = models.CharField(max_length=128)
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["media_type"], name="document_media_type")]  # the admin's filter

    def __str__(self) -> str:
        return f"{self.media_type} {self.digest}"
