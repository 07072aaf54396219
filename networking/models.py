import uuid

from django.db import models


class Network(models.Model):
    """A layer-2 network (Neutron's network)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(
        "identity.Project", on_delete=models.PROTECT, related_name="networks"
    )
    name = models.CharField(max_length=255, blank=True, db_index=True)
    description = models.CharField(max_length=255, blank=True)
    admin_state_up = models.BooleanField(default=True)
    # Shared networks are visible to, and usable by, every project.
    shared = models.BooleanField(default=False)
    mtu = models.PositiveIntegerField(default=1500)
    revision_number = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(mtu__gte=68, mtu__lte=65535), name="network_mtu_range"
            ),
        ]

    def __str__(self) -> str:
        return self.name or str(self.id)
