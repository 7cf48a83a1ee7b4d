from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("builds", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="build",
            name="conda_lock",
            field=models.TextField(
                blank=True,
                help_text="The explicit Conda lock the build printed into its log (Conda recipes), once it ran.",
            ),
        ),
    ]
