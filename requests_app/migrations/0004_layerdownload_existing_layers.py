# A migration of its own: on PostgreSQL, rows updated in the migration that adds the foreign key would
# block the index Django creates at the end of that migration ("pending trigger events").

import datetime as dt
import hashlib
import json

import django.utils.timezone
from django.db import migrations


def link_existing_layers(apps, schema_editor):
    """One download per exact http layer already stored: ready if any of its layers is, queued (long ago, so
    that the reaper sends it at once) if any still waits, failed otherwise."""
    LayerDownload = apps.get_model("requests_app", "LayerDownload")
    InjectedLayer = apps.get_model("requests_app", "InjectedLayer")
    long_ago = django.utils.timezone.now() - dt.timedelta(days=1)
    groups = {}
    for layer in InjectedLayer.objects.filter(kind="http", download__isnull=True).order_by("pk").iterator():
        key = (layer.url, layer.gzip_size, layer.gzip_digest, layer.tar_digest)
        groups.setdefault(key, []).append(layer)
    for (url, gzip_size, gzip_digest, tar_digest), layers in groups.items():
        ready = [layer for layer in layers if layer.state == "ready"]
        pending = [layer for layer in layers if layer.state == "pending"]
        download = LayerDownload.objects.create(
            identity=hashlib.sha256(json.dumps([url, gzip_size, gzip_digest, tar_digest]).encode()).hexdigest(),
            url=url, gzip_size=gzip_size, gzip_digest=gzip_digest, tar_digest=tar_digest, queued_at=long_ago,
            state="ready" if ready else "queued" if pending else "failed",
            blob_key=ready[0].blob_key if ready else "",
            failure_reason="" if ready or pending else layers[-1].failure_reason,
            finished_at=None if pending and not ready else layers[-1].finished_at,
        )
        InjectedLayer.objects.filter(pk__in=[layer.pk for layer in layers]).update(download=download)
        if ready and pending:  # the old code settled these when the first finished
            InjectedLayer.objects.filter(pk__in=[layer.pk for layer in pending]).update(
                state="ready", blob_key=download.blob_key, finished_at=django.utils.timezone.now()
            )


class Migration(migrations.Migration):

    dependencies = [
        ('requests_app', '0003_layerdownload'),
    ]

    operations = [
        migrations.RunPython(link_existing_layers, migrations.RunPython.noop),
    ]
