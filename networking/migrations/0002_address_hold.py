import django.db.models.deletion
from django.db import migrations, models

# On PostgreSQL no two holds of one address may overlap in time (half-open
# ranges: back-to-back holds fit). SQLite has no exclusion constraints;
# there the holding service's subnet lock is the guarantee.
CREATE = """
CREATE EXTENSION IF NOT EXISTS btree_gist;
ALTER TABLE networking_addresshold
    ADD CONSTRAINT hold_no_overlap_per_address
    EXCLUDE USING gist (subnet_id WITH =, address WITH =, tstzrange(start_at, end_at, '[)') WITH &&);
"""
DROP = "ALTER TABLE networking_addresshold DROP CONSTRAINT hold_no_overlap_per_address;"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [
        ("identity", "0008_token_user_required"),
        ("networking", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="AddressHold",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("address", models.GenericIPAddressField()),
                ("holder", models.UUIDField(db_index=True)),
                ("start_at", models.DateTimeField()),
                ("end_at", models.DateTimeField()),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="address_holds",
                        to="identity.project",
                    ),
                ),
                (
                    "subnet",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="holds",
                        to="networking.subnet",
                    ),
                ),
            ],
            options={
                "ordering": ["subnet", "address"],
                "indexes": [
                    models.Index(
                        fields=["subnet", "address", "end_at"],
                        name="networking__subnet__e6ac86_idx",
                    )
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("end_at__gt", models.F("start_at"))),
                        name="hold_ends_after_start",
                    )
                ],
            },
        ),
        migrations.RunPython(create, drop),
    ]
