"""Reads for compute."""

from django.db.models import QuerySet

from compute.models import Flavor, Host, Instance, InstanceStatus
from compute.scheduler import alive_since
from config.auth import RequestContext


def server_list(*, context: RequestContext, all_projects: bool = False) -> QuerySet[Instance]:
    """Live instances of the caller's project; admins may ask for all (Nova's
    all_tenants)."""
    servers = (
        Instance.objects.exclude(status=InstanceStatus.DELETED)
        .select_related("host", "flavor", "project")
        .prefetch_related("nics__port__fixed_ips", "nics__port__network")
    )
    if context.is_admin and all_projects:
        return servers
    return servers.filter(project=context.project)


def flavor_list(*, context: RequestContext) -> QuerySet[Flavor]:
    flavors = Flavor.objects.all()
    return flavors if context.is_admin else flavors.filter(is_public=True)


def host_list() -> QuerySet[Host]:
    return Host.objects.all()


def host_is_up(host: Host) -> bool:
    return host.last_heartbeat >= alive_since()
