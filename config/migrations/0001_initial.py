import uuid

from django.db import migrations, models


def content_types_to_config(apps, schema_editor):
    # The admin's permissions on these models stay granted: they hang on
    # the content type, which moves with the model.
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="identity", model__in=["healthprobe", "periodicrun"]).update(
        app_label="config"
    )


class Migration(migrations.Migration):
    """Takes over identity's tables for the health probes and periodic runs
    (identity's 0006 let go of them) under their old names; 0002 renames
    them."""

    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("identity", "0006_health_models_to_config"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="HealthProbe",
                    fields=[
                        ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("answered_at", models.DateTimeField(blank=True, null=True)),
                        ("worker", models.CharField(blank=True, max_length=255)),
                        ("request_id", models.CharField(blank=True, max_length=64)),
                    ],
                    options={"db_table": "identity_healthprobe"},
                ),
                migrations.CreateModel(
                    name="PeriodicRun",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(max_length=200, unique=True)),
                        ("scheduled_at", models.DateTimeField()),
                        ("succeeded_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={"db_table": "identity_periodicrun"},
                ),
            ],
        ),
        migrations.RunPython(content_types_to_config, migrations.RunPython.noop),
    ]
