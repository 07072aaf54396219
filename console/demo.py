"""The demo cloud: a routed network on two racks, four hosts, flavors, and
servers built through the real pipeline. Every function is safe to run
again on the same database (the README's demo command may be re-run)."""

import importlib.util
import io
import json
import textwrap
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from compute import services as compute
from compute.management.commands.host_report import host_report_from, report_options
from compute.models import Flavor, Host, Image, Instance, InstanceStatus
from compute.selectors import host_is_up, power_state_name
from identity.auth import DEMO_USER, RequestContext, user_context
from identity.keystone import IDENTITY_PREFIX
from identity.models import Role
from identity.services import membership_ensure, project_get_or_create
from networking import selectors
from networking import services as networking
from networking.models import Network, Port
from reservations import services as reservations
from reservations.models import Lease, LeaseStatus, ReservableHost
from reservations.selectors import current_allocations

DEMO_NETWORK = "routed-net"
# segment name -> (segment spec, subnet cidr)
DEMO_SEGMENTS = {
    "rack1": (
        {"network_type": "vlan", "physical_network": "physnet1", "segmentation_id": 101},
        "10.1.0.0/24",
    ),
    "rack2": (
        {"network_type": "vlan", "physical_network": "physnet2", "segmentation_id": 102},
        "10.2.0.0/24",
    ),
}
# Each host as its agent describes it: host_report's options, which
# `manage.py agent --report-file` reads (one JSON object per host).
DEMO_HOSTS = {
    "compute-1": {"vcpus": 16, "ram": 32768, "disk": 500, "physnet": ["physnet1"]},
    "compute-2": {"vcpus": 16, "ram": 32768, "disk": 500, "physnet": ["physnet1"]},
    # The roomiest host, so the scheduler tries it first; its (fake)
    # hypervisor fails every spawn, and the build moves on with its ports.
    "compute-3": {
        "vcpus": 32,
        "ram": 131072,
        "disk": 500,
        "physnet": ["physnet2"],
        "driver_options": {"spawn_error": "simulated hypervisor fault"},
    },
    # OVS-DPDK: ports on this host are plugged as vhost-user sockets.
    "compute-4": {
        "vcpus": 16,
        "ram": 65536,
        "disk": 500,
        "physnet": ["physnet2"],
        "datapath": "netdev",
        "interface_type": ["dpdkvhostuser", "dpdkvhostuserclient"],
    },
    # Reservable: it takes only instances of a lease that holds it.
    "compute-5": {
        "vcpus": 32,
        "ram": 65536,
        "disk": 1000,
        "capabilities": {"node_type": "gpu"},
        "physnet": ["physnet1"],
    },
}
DEMO_RESERVABLE = "compute-5"
# The host whose agent the demo stops: the roomiest that spawns, so the
# build sent right after goes there and fails over.
DEMO_FAILOVER_HOST = "compute-4"
# Every host but compute-3 runs its servers as domains of libvirt's test
# driver (a real libvirt connection, in the agent's process, with no
# hypervisor) where libvirt-python is installed; else on the fake driver.
LIBVIRT_OPTIONS = {
    "virt_driver": "libvirt",
    "driver_options": {"libvirt_uri": "test:///default", "libvirt_pool": "default-pool"},
}


def libvirt_available() -> bool:
    return importlib.util.find_spec("libvirt") is not None


def host_options(name: str) -> dict:
    """The agent's report of host ``name``, as host_report's options."""
    options = {"name": name, **DEMO_HOSTS[name]}
    if "driver_options" not in options and libvirt_available():
        options |= LIBVIRT_OPTIONS
    return options


DEMO_LEASE = "demo-lease"
DEMO_FLAVORS = [
    {"id": "m1.small", "name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20},
    {"id": "m1.large", "name": "m1.large", "vcpus": 4, "ram": 8192, "disk": 80},
]
DEMO_SERVERS = ["web-1", "web-2", "db-1"]
DEMO_IMAGE = "cirros"


def _nothing(*_) -> None:
    pass


def demo_context() -> RequestContext:
    """The demo acts as its user, the one whose token it prints: what it
    makes shows the same user_id as what that token makes."""
    membership = membership_ensure(
        project_name=settings.BERTH_DEMO_PROJECT, username=DEMO_USER, role=Role.ADMIN
    )
    return user_context(user=membership.user, project=membership.project, role=Role.ADMIN)


def hosts_report() -> None:
    """Report the demo's hosts in this process, as their agents would
    (for tests and benchmarks that run no agent)."""
    for name in DEMO_HOSTS:
        compute.host_report(report=host_report_from(report_options(host_options(name))))


def agent_report_files(folder: Path) -> dict[str, Path]:
    """One report file per demo host, for `manage.py agent --report-file`."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / f"{name}.json" for name in DEMO_HOSTS}
    for name, path in files.items():
        path.write_text(json.dumps(host_options(name)) + "\n", encoding="utf-8")
    return files


@transaction.atomic
def network_ensure() -> Network:
    """The routed network, its segments and subnets, and the flavors."""
    context = demo_context()
    project = context.project
    network = Network.objects.filter(project=project, name=DEMO_NETWORK).first()
    if network is None:
        network = networking.network_create(
            context=context,
            project=project,
            name=DEMO_NETWORK,
            segments=[{**spec, "name": name} for name, (spec, _) in DEMO_SEGMENTS.items()],
        )
    segments = {s.name: s for s in network.segments.all()}
    cidrs = set(network.subnets.values_list("cidr", flat=True))
    for name, (spec, cidr) in DEMO_SEGMENTS.items():
        if name not in segments:  # deleted since the last run
            segments[name] = networking.segment_create(network=network, name=name, **spec)
        if cidr not in cidrs:
            networking.subnet_create(
                project=project, network=network, segment=segments[name], cidr=cidr, name=name
            )
    for flavor in DEMO_FLAVORS:
        if not Flavor.objects.filter(pk=flavor["id"]).exists():
            compute.flavor_create(**flavor)
    # An image to name in `openstack server create --image cirros`.
    if not Image.objects.filter(name=DEMO_IMAGE).exists():
        compute.image_create(name=DEMO_IMAGE)
    return network


def reservable_ensure() -> None:
    """The gpu host in the reservable pool, once its agent reported it."""
    if not ReservableHost.objects.filter(host__name=DEMO_RESERVABLE).exists():
        reservations.reservable_host_create(
            name=DEMO_RESERVABLE, capabilities=DEMO_HOSTS[DEMO_RESERVABLE]["capabilities"]
        )


def cloud_ensure() -> Network:
    """The whole demo cloud in this process, hosts reported as their agents
    would: for tests and benchmarks that run no agent."""
    network = network_ensure()
    hosts_report()
    reservable_ensure()
    return network


def hosts_wait(timeout: float = 60, *, tick: Callable[[int], object] = _nothing) -> None:
    """Until every demo host's agent has reported it; ``tick`` gets how many
    have, at every poll."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reported = Host.objects.filter(name__in=DEMO_HOSTS, has_agent=True).count()
        tick(reported)
        if reported == len(DEMO_HOSTS):
            return
        time.sleep(0.3)


def servers_boot(network: Network) -> list[Instance]:
    """Ask for the demo's servers through the same service as POST /servers
    (web-1 and web-2 on the network, db-1 on a port made beforehand), unless
    they already run. The worker builds them."""
    context = demo_context()
    live = Instance.objects.filter(project=context.project).exclude(status=InstanceStatus.DELETED)
    flavor = Flavor.objects.get(pk="m1.small")
    booted = []
    for name in DEMO_SERVERS:
        if live.filter(name=name, status=InstanceStatus.ACTIVE).exists():
            continue
        if name == "db-1":
            port = Port.objects.filter(network=network, name="db-1-port", device_id="").first()
            port = port or networking.port_create(
                project=context.project, network=network, name="db-1-port"
            )
            nic = compute.NicRequest(port=port)
        else:
            nic = compute.NicRequest(network=network)
        booted += compute.server_create(context=context, name=name, flavor=flavor, nics=[nic])
    return booted


def servers_wait(
    instances: list[Instance], timeout: float = 90, *, tick: Callable[[int], object] = _nothing
) -> None:
    """Until every instance has left BUILD (ACTIVE or ERROR); ``tick`` gets
    how many have, at every poll."""
    deadline = time.monotonic() + timeout
    ids = [i.pk for i in instances]
    while time.monotonic() < deadline:
        building = Instance.objects.filter(pk__in=ids, status=InstanceStatus.BUILD).count()
        tick(len(ids) - building)
        if not building:
            return
        time.sleep(0.3)


def failover_boot(network: Network) -> list[Instance]:
    """failover-1, sent (by the scheduler's weights) to DEMO_FAILOVER_HOST,
    whose agent the demo has just stopped: the host still looks alive for a
    few heartbeats, so the build waits in its queue until the host is
    declared down and the build fails over. A run that finds it ACTIVE
    boots nothing."""
    context = demo_context()
    live = Instance.objects.filter(project=context.project, name="failover-1")
    if live.filter(status=InstanceStatus.ACTIVE).exists():
        return []
    return compute.server_create(
        context=context,
        name="failover-1",
        flavor=Flavor.objects.get(pk="m1.small"),
        nics=[compute.NicRequest(network=network)],
    )


def failover_story(instances: list[Instance], stopped: str) -> str:
    """What happened to failover-1, in a sentence."""
    if not instances:
        return "failover-1 already runs (an earlier run of the demo built it)."
    instance = Instance.objects.select_related("host").get(pk=instances[0].pk)
    where = instance.host.name if instance.host else "no host"
    if stopped in instance.excluded_hosts:
        return (
            f"failover-1 was sent to {stopped}, which went down; it was rebuilt on {where} "
            f"with the same port ({instance.status}, attempt {instance.attempt})."
        )
    return f"failover-1 went to {where} ({instance.status}): the scheduler passed over {stopped}."


def host_up_wait(name: str, timeout: float = 30) -> bool:
    """Until the host's heartbeats are back and the sweep took it up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        host = Host.objects.get(name=name)
        if host.down_since is None and host_is_up(host):
            return True
        time.sleep(0.3)
    return False


def lease_ensure(*, starts_in: int = 20, heads_up: int = 10) -> Lease:
    """A one-hour lease of the gpu host starting shortly, with a heads-up
    just before; a lease left by an earlier run is reused while it runs."""
    context = demo_context()
    lease = Lease.objects.filter(project=context.project, name=DEMO_LEASE).first()
    if lease is not None and lease.status in (LeaseStatus.PENDING, LeaseStatus.ACTIVE):
        return lease
    if lease is not None:
        reservations.lease_delete(lease=lease)
    start = timezone.now() + timedelta(seconds=starts_in)
    request = reservations.LeaseRequest(
        name=DEMO_LEASE,
        start=start,
        end=start + timedelta(hours=1),
        heads_up_seconds=heads_up,
        reservations=[
            reservations.HostRequest(
                min=1, max=1, resource_properties='["==", "$node_type", "gpu"]'
            )
        ],
    )
    return reservations.lease_create(context=context, request=request)


def lease_wait_active(
    lease: Lease, timeout: float = 90, *, tick: Callable[[], object] = _nothing
) -> Lease:
    deadline = time.monotonic() + timeout
    lease.refresh_from_db()
    while lease.status == LeaseStatus.PENDING and time.monotonic() < deadline:
        tick()
        time.sleep(0.5)
        lease.refresh_from_db()
    return lease


def lease_server_boot(lease: Lease, network: Network) -> list[Instance]:
    """A server carrying the lease's reservation: it may land only on the
    reserved host."""
    context = demo_context()
    reservation = lease.reservations.get()
    running = Instance.objects.filter(
        reservation_id=str(reservation.pk), status=InstanceStatus.ACTIVE
    )
    if running.exists():
        return []
    return compute.server_create(
        context=context,
        name="leased-1",
        flavor=Flavor.objects.get(pk="m1.large"),
        nics=[compute.NicRequest(network=network)],
        reservation_id=str(reservation.pk),
    )


# --- the summary ---------------------------------------------------------------

STATUS_STYLE = {"ACTIVE": "green", "ERROR": "red", "BUILD": "yellow", "PENDING": "yellow"}


def render(*tables: Table, width: int = 120, color: bool = False) -> str:
    """Tables as text for a command's stdout. Cells are plain text (no rich
    markup), so a fault message with brackets shows as it is."""
    console = Console(
        file=io.StringIO(),
        width=width,
        force_terminal=color,
        no_color=not color,
        markup=False,
        emoji=False,
        highlight=False,
    )
    for table in tables:
        console.print(table)
        console.print()
    # Cells are padded to the column width; logs need no trailing blanks.
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines()).strip("\n")


def _table(title: str, *columns: str) -> Table:
    return Table(*columns, title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def hosts_table(network: Network) -> Table:
    """Every reported host: up or down, how it plugs ports, which of the
    network's segments it reaches, and what is free under its ratios."""
    segments = list(network.segments.all())
    agents = {agent.host: agent for agent in selectors.agent_list()}
    table = _table(
        "hosts",
        "host",
        "state",
        "driver",
        "datapath",
        "physnets",
        "reaches",
        "free vCPUs",
        "free RAM MiB",
        "domains",
    )
    for host in Host.objects.order_by("name"):
        agent = agents.get(host.name)
        physnets = sorted(p.physical_network for p in agent.physnets.all()) if agent else []
        reached = [s.name for s in segments if s.physical_network in physnets]
        up = host_is_up(host)
        state = Text("up" if up else "down", style="green" if up else "red")
        if not host.enabled:
            state.append(", disabled", style="yellow")
        table.add_row(
            host.name,
            state,
            host.virt_driver + (" (agent)" if host.has_agent else ""),
            agent.datapath_type if agent else "-",
            ", ".join(physnets) or "-",
            ", ".join(reached) or "-",
            f"{host.free_vcpus:g}",
            f"{host.free_ram:g}",
            # What the agent's hypervisor runs, as the agent reports it.
            str(len(host.domains)) if host.has_agent else "-",
        )
    return table


def network_table(network: Network) -> Table:
    """The network's segments with their subnets and addresses in use."""
    network = Network.objects.prefetch_related("segments", "subnets").get(pk=network.pk)
    per_subnet, _ = selectors.ip_availability(networks=[network])
    table = _table(
        f"network {network.name} ({network.pk})",
        "segment",
        "physnet",
        "vlan",
        "subnet",
        "used/total IPs",
    )
    for segment in network.segments.all():
        for subnet in [s for s in network.subnets.all() if s.segment_id == segment.id] or [None]:
            cidr, used = "-", "-"
            if subnet is not None:
                here = per_subnet[subnet.id]
                cidr, used = str(subnet.cidr), f"{here.used_ips}/{here.total_ips}"
            table.add_row(
                segment.name,
                segment.physical_network or "-",
                str(segment.segmentation_id or "-"),
                cidr,
                used,
            )
    return table


def leases_table() -> Table:
    """The demo project's leases: status, time, hosts and events."""
    project = project_get_or_create(name=settings.BERTH_DEMO_PROJECT)
    leases = Lease.objects.filter(project=project).prefetch_related("events")
    hosts: dict = {}
    held = current_allocations().filter(reservation__lease__in=leases)
    for lease_id, host in held.values_list("reservation__lease_id", "host__name"):
        hosts.setdefault(lease_id, []).append(host)
    table = _table("leases", "lease", "status", "start", "end", "hosts", "events")
    for lease in leases:
        events = [
            f"{e.event_type} {e.status} "
            + (f"{e.fired_at:%H:%M:%S}" if e.fired_at else f"due {e.time:%H:%M:%S}")
            for e in lease.events.all()
        ]
        table.add_row(
            lease.name,
            _status(lease.status),
            f"{lease.start_at:%Y-%m-%d %H:%M:%S}",
            f"{lease.end_at:%Y-%m-%d %H:%M:%S}",
            ", ".join(sorted(hosts.get(lease.pk, []))) or "-",
            "\n".join(events) or "-",
        )
    return table


def servers_table() -> Table:
    """Every demo server: status, host, addresses, vif_type of each port,
    build attempts with the hosts that failed it, the fault if any, and how
    long it took from the request to ACTIVE."""
    project = project_get_or_create(name=settings.BERTH_DEMO_PROJECT)
    servers = (
        Instance.objects.filter(project=project)
        .exclude(status=InstanceStatus.DELETED)
        .select_related("host")
        .prefetch_related("nics__port__fixed_ips")
        .order_by("name")
    )
    table = _table(
        "servers",
        "server",
        "status",
        "power",
        "host",
        "IPs",
        "vif_type",
        "attempts",
        "hosts tried",
        "fault",
        "to ACTIVE",
    )
    for server in servers:
        ports = [nic.port for nic in server.nics.all() if nic.port]
        table.add_row(
            server.name,
            _status(server.status),
            power_state_name(server.power_state),
            server.host.name if server.host else "-",
            ", ".join(a.address for p in ports for a in p.fixed_ips.all()) or "-",
            ", ".join(p.binding_vif_type for p in ports) or "-",
            str(server.attempt),
            ", ".join(server.excluded_hosts) or "-",
            (server.fault or {}).get("message", "-"),
            f"{(server.launched_at - server.created_at).total_seconds():.1f} s"
            if server.launched_at
            else "-",
        )
    return table


# --- the openstack CLI ----------------------------------------------------------------

# The command families the openstack CLI runs against berth, signed in at
# its identity API: docs/clients.md lists each command; tests/*/test_clients.py
# and tests/identity/ run them.
CLI_WORKS = (
    "token issue",
    "project",
    "user",
    "role",
    "application credential",
    "network",
    "network segment",
    "subnet",
    "port",
    "ip availability",
    "network agent",
    "extension list",
    "flavor list/show/create/delete",
    "image list/show/create/delete",
    "hypervisor list",
    "compute service list/set",
    "server list/show/create/delete",
    "server stop/start/reboot",
    "server event list/show",
    "reservation lease",
    "reservation host",
    "reservation allocation",
)


def keystone_environment(*, base: str, username: str, password: str) -> dict[str, str]:
    """The OS_* settings of a Keystone user: an auth_url, the user and the
    demo project; every client finds the services in the token's catalog.
    The auth type is the openstack CLI's default, said because
    python-blazarclient's own shell (``blazar``) has none."""
    return {
        "OS_AUTH_URL": f"{base}/{IDENTITY_PREFIX}",
        "OS_IDENTITY_API_VERSION": "3",
        "OS_AUTH_TYPE": "password",
        "OS_USERNAME": username,
        "OS_PASSWORD": password,
        "OS_PROJECT_NAME": settings.BERTH_DEMO_PROJECT,
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
    }


def clouds_yaml(environment: dict[str, str], cloud: str = "berth") -> str:
    """The same as a clouds.yaml entry (openstack --os-cloud berth ...)."""
    auth = {
        "auth_url": environment["OS_AUTH_URL"],
        "username": environment["OS_USERNAME"],
        "password": environment["OS_PASSWORD"],
        "project_name": environment["OS_PROJECT_NAME"],
        "user_domain_name": "Default",
        "project_domain_name": "Default",
    }
    lines = ["clouds:", f"  {cloud}:", "    auth:"]
    lines += [f"      {key}: {json.dumps(value)}" for key, value in auth.items()]
    lines += ["    identity_api_version: 3", ""]
    return "\n".join(lines)


def cli_environment(*, base: str, token: str) -> dict[str, str]:
    """The OS_* settings of a berth token (one from ``create_token``): the
    clients trade it at the identity API (keystoneauth's v3token plugin)
    for a token with the catalog, and find every service there."""
    return {
        "OS_AUTH_URL": f"{base}/{IDENTITY_PREFIX}",
        "OS_IDENTITY_API_VERSION": "3",
        "OS_AUTH_TYPE": "v3token",
        "OS_TOKEN": token,
    }


def cli_hint(environment: dict[str, str]) -> list[str]:
    """The demo's lines on a token's client settings (cli_environment) and
    what the CLI does against berth."""
    return [
        *(f"  export {k}={v}" for k, v in environment.items()),
        *textwrap.wrap(
            f"The CLI works for {', '.join(CLI_WORKS)}; docs/clients.md lists each "
            "command, and what berth does not serve (routers, security groups, "
            "floating IPs, keypairs, quotas).",
            width=96,
            initial_indent="  ",
            subsequent_indent="  ",
        ),
    ]
