from django.db import migrations


class Migration(migrations.Migration):
    """The health probes and periodic runs belong to config's plumbing, not
    to identity: they leave identity's state here and config's 0001 takes
    over their tables (nothing in the database changes)."""

    dependencies = [
        ("identity", "0005_application_credentials"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="HealthProbe"),
                migrations.DeleteModel(name="PeriodicRun"),
            ],
        ),
    ]
