"""A GIN index on `generated_digests` (Postgres only): the blob collector asks, per batch of keys, which live
requests own a generated document (`generated_digests ?| array[...]`); without it, each batch reads the table."""

from django.db import migrations

NAME = "request_generated_digests_gin"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {NAME} ON requests_app_containerrequest USING gin (generated_digests)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {NAME}")


class Migration(migrations.Migration):
    dependencies = [("requests_app", "0007_admin_scale_indexes")]

    operations = [migrations.RunPython(create, drop)]
