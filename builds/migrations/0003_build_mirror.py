from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("builds", "0002_build_conda_lock"),
    ]

    operations = [
        migrations.AddField(
            model_name="build",
            name="kind",
            field=models.CharField(
                choices=[("build", "build"), ("mirror", "mirror")], db_index=True, default="build", max_length=8
            ),
        ),
        migrations.AddField(
            model_name="build",
            name="source_image",
            field=models.CharField(
                blank=True, help_text="A mirror's source image (empty for a build).", max_length=1024
            ),
        ),
    ]
