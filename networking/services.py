"""Writes for networking. Keyword-only, typed, named <entity>_<verb>."""

from django.db import transaction

from config.auth import RequestContext
from config.errors import Forbidden
from config.models import Project
from config.quotas import quota_enforce
from networking.models import Network


def _check_shared_allowed(context: RequestContext, fields: dict) -> None:
    # Neutron policy: only an admin makes a network visible to all projects.
    if fields.get("shared") and not context.is_admin:
        raise Forbidden("Only an admin can create or update a shared network.")


@transaction.atomic
def network_create(*, context: RequestContext, project: Project, **fields) -> Network:
    _check_shared_allowed(context, fields)
    quota_enforce(project=project, requested={"network": 1})
    return Network.objects.create(project=project, **fields)


@transaction.atomic
def network_update(*, context: RequestContext, network: Network, **fields) -> Network:
    _check_shared_allowed(context, fields)
    network = Network.objects.select_for_update().get(pk=network.pk)
    for name, value in fields.items():
        setattr(network, name, value)
    network.revision_number += 1
    network.save()
    return network


@transaction.atomic
def network_delete(*, network: Network) -> None:
    Network.objects.filter(pk=network.pk).delete()
