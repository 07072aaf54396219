"""A healed allocation points at its replacement, so a reservation's hosts
are the ones it holds now and the replaced ones are history.

Allocations healed before this migration are found by how healing left
them: ended before their lease's end, at the instant another allocation of
the same reservation started on another host."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import F


def link_healed(apps, schema_editor):
    HostAllocation = apps.get_model("reservations", "HostAllocation")
    ended_early = HostAllocation.objects.filter(
        slots=0, end_at__lt=F("reservation__lease__end_at")
    )
    for lost in ended_early:
        replacement = (
            HostAllocation.objects.filter(
                reservation_id=lost.reservation_id, start_at=lost.end_at, slots=0
            )
            .exclude(host_id=lost.host_id)
            .first()
        )
        if replacement is not None:
            HostAllocation.objects.filter(pk=lost.pk).update(replaced_by=replacement)


class Migration(migrations.Migration):
    dependencies = [
        ("reservations", "0003_reservation_flavor_protected"),
    ]

    operations = [
        migrations.AddField(
            model_name="hostallocation",
            name="replaced_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="replaced",
                to="reservations.hostallocation",
            ),
        ),
        migrations.RunPython(link_healed, migrations.RunPython.noop),
    ]
