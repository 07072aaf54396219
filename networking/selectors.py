"""Reads for networking."""

from django.db.models import Q, QuerySet

from config.auth import RequestContext
from networking.models import Network


def network_list(*, context: RequestContext) -> QuerySet[Network]:
    """Networks the caller may see: its project's and shared ones (all for admins)."""
    networks = Network.objects.select_related("project")
    if context.is_admin:
        return networks
    return networks.filter(Q(project=context.project) | Q(shared=True))
