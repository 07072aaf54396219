"""On PostgreSQL, make a double booking of a host impossible in the database:
no two whole-host allocations of one host may overlap in time (half-open
ranges, so back-to-back leases fit). SQLite has no exclusion constraints;
there the allocating service's row locks are the guarantee."""

from django.db import migrations

CREATE = """
CREATE EXTENSION IF NOT EXISTS btree_gist;
ALTER TABLE reservations_hostallocation
    ADD CONSTRAINT allocation_no_overlap_per_host
    EXCLUDE USING gist (host_id WITH =, tstzrange(start_at, end_at, '[)') WITH &&)
    WHERE (slots = 0);
"""
DROP = "ALTER TABLE reservations_hostallocation DROP CONSTRAINT allocation_no_overlap_per_host;"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("reservations", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
