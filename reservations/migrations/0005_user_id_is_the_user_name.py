"""user_id is the user's name (identity.auth.user_id_of), as long as Django
allows one; leases that hold the user's row number get the name."""

from django.conf import settings
from django.db import migrations, models

from identity.auth import user_ids_to_names


def to_names(apps, schema_editor):
    user_ids_to_names(apps, apps.get_model("reservations", "Lease"))


class Migration(migrations.Migration):
    dependencies = [
        ("reservations", "0004_allocation_replaced_by"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="lease",
            name="user_id",
            field=models.CharField(blank=True, max_length=150),
        ),
        migrations.RunPython(to_names, migrations.RunPython.noop),
    ]
