import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def users_from_memberships(apps, schema_editor):
    Token = apps.get_model("identity", "Token")
    Membership = apps.get_model("identity", "Membership")
    Token.objects.update(
        user=Subquery(Membership.objects.filter(pk=OuterRef("membership")).values("user")[:1])
    )


class Migration(migrations.Migration):
    """A token names its user (0008 makes it required and the membership,
    its project and role, optional: Keystone's unscoped tokens). Apart from
    0008 because PostgreSQL alters no table with the update's deferred
    foreign-key checks pending in the same transaction."""

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("identity", "0006_health_models_to_config"),
    ]

    operations = [
        migrations.AddField(
            model_name="token",
            name="user",
            field=models.ForeignKey(
                null=True,
                editable=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="tokens",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(users_from_memberships, migrations.RunPython.noop),
    ]
