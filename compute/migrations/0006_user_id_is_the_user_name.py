"""user_id is the user's name (identity.auth.user_id_of), as long as Django
allows one; rows that hold the user's row number get the name."""

from django.conf import settings
from django.db import migrations, models

from identity.auth import user_ids_to_names


def to_names(apps, schema_editor):
    for name in ("Instance", "InstanceAction"):
        user_ids_to_names(apps, apps.get_model("compute", name))


class Migration(migrations.Migration):
    dependencies = [
        ("compute", "0005_nic_on_delete_by_instance_status"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="instance",
            name="user_id",
            field=models.CharField(blank=True, max_length=150),
        ),
        migrations.AlterField(
            model_name="instanceaction",
            name="user_id",
            field=models.CharField(blank=True, max_length=150),
        ),
        migrations.RunPython(to_names, migrations.RunPython.noop),
    ]
