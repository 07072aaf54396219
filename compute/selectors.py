"""Reads for compute."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet

from compute.models import (
    Flavor,
    Host,
    Image,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceStatus,
)
from compute.scheduler import is_up
from compute.services import NicRequest
from compute.virt import PowerState
from config.errors import Invalid
from identity.auth import RequestContext
from networking import selectors as net_selectors
from networking import services as net_services


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


def image_list(*, context: RequestContext) -> QuerySet[Image]:
    """Public images and the caller's project's own; admins see all."""
    images = Image.objects.all()
    if context.is_admin:
        return images
    return images.filter(Q(visibility=Image.Visibility.PUBLIC) | Q(project=context.project))


def image_ref_checked(*, context: RequestContext, image_ref: str) -> str:
    """A server request's imageRef, if it names an image the caller may
    boot (or none: berth boots without one); Invalid in Nova's words."""
    if image_ref:
        try:
            found = image_list(context=context).filter(pk=uuid.UUID(str(image_ref))).exists()
        except ValueError:
            found = False
        if not found:
            raise Invalid("Can not find requested image")
    return image_ref


def flavor_list(*, context: RequestContext) -> QuerySet[Flavor]:
    flavors = Flavor.objects.all()
    return flavors if context.is_admin else flavors.filter(is_public=True)


def nic_requests(*, context: RequestContext, requested) -> list[NicRequest]:
    """A server request's ``networks`` as NicRequests, resolved among what
    the caller's project may use; an unknown network or port, another
    project's too, is 400 in Nova's words. POST /servers and a lease's
    server template (when it is made, and again when it boots) ask here."""
    if requested in (None, "auto"):
        networks = list(net_selectors.network_list(context=context)[:2])
        if len(networks) != 1:
            raise Invalid(
                "Multiple possible networks found, use a Network ID to be more specific."
                if networks
                else "No network is available to this project; pass networks."
            )
        return [NicRequest(network=networks[0])]
    if requested == "none":
        return []
    nics = []
    for entry in requested:
        if "port" in entry:
            port = _visible(net_selectors.port_list(context=context), entry["port"])
            if port is None:
                raise Invalid(f"Port id {entry['port']} could not be found.")
            nics.append(NicRequest(port=port))
            continue
        network = _visible(net_selectors.network_list(context=context), entry.get("uuid"))
        if network is None:
            raise Invalid(f"Network {entry.get('uuid')} could not be found.")
        fixed_ip = str(entry["fixed_ip"]) if entry.get("fixed_ip") else None
        # The port compute makes for this NIC obeys the user's port policy.
        net_services.port_fixed_ips_authorize(
            context=context, network=network, fixed_ips=[{"ip_address": fixed_ip}]
        )
        nics.append(NicRequest(network=network, fixed_ip=fixed_ip))
    return nics


def _visible(queryset: QuerySet, pk):
    # A template's ids were not checked as UUIDs the way POST /servers
    # checks its own: a malformed one names nothing.
    try:
        return queryset.filter(pk=uuid.UUID(str(pk))).first()
    except ValueError:
        return None


def host_list() -> QuerySet[Host]:
    return Host.objects.all()


def power_state_name(code: int) -> str:
    """Nova's name of a power state code ("running", "shutdown", ...)."""
    try:
        return PowerState(code).name.lower()
    except ValueError:
        return "nostate"


def host_is_up(host: Host) -> bool:
    return is_up(host)


@dataclass(frozen=True)
class StepRecord:
    """One pipeline step of one attempt, as the action log has it, placed on
    its action's timeline (offset and width in percent of the action's span)."""

    event: InstanceActionEvent
    duration_ms: int | None
    offset: float
    width: float

    @property
    def label(self) -> str:
        return self.event.event.removeprefix("compute_").replace("_", " ")


@dataclass(frozen=True)
class AttemptRecord:
    number: int
    steps: list[StepRecord]

    @property
    def host(self) -> str:
        return next((s.event.host for s in self.steps if s.event.host), "")

    @property
    def result(self) -> str:
        results = {s.event.result for s in self.steps}
        return "Error" if "Error" in results else self.steps[-1].event.result


@dataclass(frozen=True)
class ActionRecord:
    action: InstanceAction
    # In the order they ran, for the timeline; attempts group the same steps.
    steps: list[StepRecord]
    attempts: list[AttemptRecord]
    duration_ms: int | None


def _ms(start: datetime, finish: datetime | None) -> int | None:
    return None if finish is None else round((finish - start).total_seconds() * 1000)


# Below this a bar would vanish; a step that took no time still happened.
MIN_BAR_WIDTH = 0.5


def _action_record(action: InstanceAction) -> ActionRecord:
    events = list(action.events.all())
    if not events:
        return ActionRecord(action, [], [], None)
    begin = min(e.start_time for e in events)
    end = max(e.finish_time or e.start_time for e in events)
    span = (end - begin).total_seconds()
    steps = []
    for e in events:
        offset = (e.start_time - begin).total_seconds() / span * 100 if span else 0.0
        length = ((e.finish_time or e.start_time) - e.start_time).total_seconds()
        width = length / span * 100 if span else 100.0
        steps.append(
            StepRecord(
                event=e,
                duration_ms=_ms(e.start_time, e.finish_time),
                offset=round(min(offset, 100 - MIN_BAR_WIDTH), 2),
                width=round(max(width, MIN_BAR_WIDTH), 2),
            )
        )
    attempts = [
        AttemptRecord(n, [s for s in steps if s.event.attempt == n])
        for n in sorted({e.attempt for e in events})
    ]
    return ActionRecord(action, steps, attempts, _ms(begin, end))


def build_history(*, instance: Instance) -> list[ActionRecord]:
    """Every request on the instance (create, delete) with its steps per
    attempt: host tried, outcome, duration and what went wrong. Two queries,
    whatever the number of actions and events."""
    actions = InstanceAction.objects.filter(instance=instance).prefetch_related("events")
    return [_action_record(action) for action in actions]
