"""Builds: one row per build of one target image, a durable job like a layer download.

Created or joined when a request asks for a build (a partial unique constraint keeps one active build per
target, so concurrent identical requests share it), claimed by its task with a compare-and-set on `state`,
kept alive by heartbeats while buildah runs, failed by the reaper when its worker is lost. The log lives in
the blob store in chunks (`log_chunks` of them), so that any web process can serve it while it grows.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class Build(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "pending"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    class Kind(models.TextChoices):
        BUILD = "build", "build"
        MIRROR = "mirror", "mirror"  # an image copied to the build repository as it is (builds.mirrors)

    ACTIVE = (State.PENDING, State.RUNNING)
    FINISHED = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    build_id = models.CharField(max_length=64, unique=True, help_text="bd-{containerId}_{n}.")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.BUILD, db_index=True)
    source_image = models.CharField(
        max_length=1024, blank=True, help_text="A mirror's source image (empty for a build)."
    )
    container_id = models.CharField(max_length=16, db_index=True, help_text="SipHash of the build's inputs.")
    number = models.PositiveIntegerField(help_text="n: the builds of this containerId so far, this one included.")
    target_image = models.CharField(max_length=1024, db_index=True, help_text="{repository}:{containerId}.")
    repository = models.CharField(max_length=1024, help_text="The build repository the image is pushed to.")
    cache_repository = models.CharField(max_length=1024, blank=True)
    platform = models.CharField(max_length=32, default="linux/amd64")
    container_file = models.TextField(help_text="The Containerfile built.")
    conda_file = models.TextField(blank=True)
    spack_file = models.TextField(blank=True)
    conda_lock = models.TextField(
        blank=True, help_text="The explicit Conda lock the build printed into its log (Conda recipes), once it ran."
    )
    context_digest = models.CharField(
        max_length=80, blank=True, help_text="gzip digest of the build context layer (blob store), if any."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Claims so far.")
    claimed_by = models.CharField(max_length=200, blank=True, help_text="host:pid:nonce of the running attempt.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    queued_at = models.DateTimeField(default=timezone.now, help_text="When it last entered the queue.")
    sent_at = models.DateTimeField(
        null=True, blank=True, help_text="When the reaper last sent it again (empty: sent once, when queued)."
    )
    resends = models.PositiveSmallIntegerField(
        default=0, help_text="Times the reaper sent it again (each wait doubles)."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_status = models.IntegerField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    digest = models.CharField(max_length=80, blank=True, help_text="Digest of the pushed image manifest.")
    log_chunks = models.PositiveIntegerField(default=0, help_text="Chunks of log written to the blob store.")
    log_size = models.PositiveBigIntegerField(default=0)
    # Who asked first (later identical requests join): their registry credentials pull the FROM images.
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_id = models.BigIntegerField(null=True, blank=True)
    user_name = models.CharField(max_length=256, blank=True)
    user_email = models.CharField(max_length=320, blank=True)
    tower_auth = models.ForeignKey(
        "credentials.TowerAuth", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    tower_endpoint = models.CharField(max_length=512, blank=True)
    tower_workspace_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["target_image"],
                condition=Q(state__in=["pending", "running"]),
                name="one_active_build_per_target",
            ),
            models.UniqueConstraint(fields=["container_id", "number"], name="unique_build_number"),
        ]
        indexes = [
            models.Index(fields=["state", "heartbeat_at"], name="build_state_heartbeat"),
            models.Index(fields=["context_digest"], name="build_context_digest"),  # the blob collector's lookups
            # The admin's platform filter (builds.admin); its search by user name has a Postgres index (0004).
            models.Index(fields=["platform", "created_at"], name="build_platform_created"),
        ]

    def __str__(self) -> str:
        return f"{self.build_id} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE

    @property
    def succeeded(self) -> bool | None:
        """None while it runs."""
        if self.is_active:
            return None
        return self.state == self.State.SUCCEEDED

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()
