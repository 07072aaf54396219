from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("config", "0001_initial"),
    ]

    operations = [
        migrations.AlterModelTable(name="healthprobe", table=None),
        migrations.AlterModelTable(name="periodicrun", table=None),
    ]
