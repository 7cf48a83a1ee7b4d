"""`manage.py gc_blobs`: the blob garbage collection by hand (wave_site.blob_gc), or with `--dry-run` what
it would delete."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from wave_site.blob_gc import DEFAULT_BATCH_SIZE, StoredBlob, blob_gc


class Command(BaseCommand):
    help = (
        "Delete blobs no stored request, layer download or build references any more, last written more than "
        "WAVE_BLOB_GC_GRACE seconds ago, and scratch files of dead downloads (the beat task's collection)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
        parser.add_argument("--grace", type=int, default=None, help="seconds (default: WAVE_BLOB_GC_GRACE)")
        parser.add_argument(
            "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="blobs judged at a time (default %(default)s)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        if options["grace"] is not None and options["grace"] < 0:
            raise CommandError("--grace must not be negative")
        dry_run: bool = options["dry_run"]

        def listed(blob: StoredBlob) -> None:
            self.stdout.write(f"{blob.size}\t{blob.key}")

        counts = blob_gc(grace=options["grace"], batch_size=options["batch_size"], dry_run=dry_run, on_blob=listed)
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(f"blobs: {counts.blobs} ({counts.bytes} bytes) {verb}")
        self.stdout.write(f"scratch files: {counts.scratch_files} {verb}")
