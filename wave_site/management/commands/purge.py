"""`manage.py purge`: the hourly purge by hand (requests_app.purge), or with `--dry-run` what it would delete."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from requests_app.purge import DEFAULT_BATCH_SIZE, expired_purge


class Command(BaseCommand):
    help = (
        "Delete expired requests and their layers, unused finished layer downloads and builds past retention, "
        "in batches (the beat task's purge)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")
        parser.add_argument(
            "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per transaction (default %(default)s)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size: int = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        verbose = options["verbosity"] > 1

        def progress(kind: str, rows: int) -> None:
            if verbose:
                self.stdout.write(f"  {kind}: {rows} deleted in a batch")

        counts = expired_purge(batch_size=batch_size, dry_run=options["dry_run"], on_batch=progress)
        verb = "would delete" if options["dry_run"] else "deleted"
        for field in dataclasses.fields(counts):
            if options["dry_run"] and field.name in ("tower_sessions", "credential_lookups"):
                continue  # counted only by a real run (they depend on the requests it deletes)
            self.stdout.write(f"{field.name}: {getattr(counts, field.name)} {verb}")
