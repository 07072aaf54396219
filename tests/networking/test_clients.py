"""The Neutron API driven by the real clients, openstacksdk and the
`openstack` CLI, against a live server (openstack_wire.md sections 1-3)."""

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import openstack
import pytest
from openstack import exceptions

from console.demo import CLI_WORKS, cli_environment, cli_hint
from identity.services import token_create
from networking.models import Port
from networking.services import HostNetworkReport, host_agent_report
from tests.factories import HostAgentFactory

OPENSTACK_CLI = Path(sys.executable).parent / "openstack"

OVS_DETAILS = {
    "port_filter": True,
    "ovs_hybrid_plug": False,
    "datapath_type": "system",
    "bridge_name": "br-int",
    "connectivity": "l2",
}


def connect(base: str, token: str):
    return openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": base, "token": token},
        network_endpoint_override=base + "/networking",
        load_yaml_config=False,
        load_envvars=False,
        api_timeout=30,
    )


def token(role: str, project: str) -> str:
    return token_create(project_name=project, username=f"{role}-{project}", role=role)[1]


def in_pool(address: str, subnet) -> bool:
    pool = subnet.allocation_pools[0]
    low, high = ipaddress.ip_address(pool["start"]), ipaddress.ip_address(pool["end"])
    return low <= ipaddress.ip_address(address) <= high


def neutron_error(error: exceptions.HttpException) -> dict:
    return error.response.json()["NeutronError"]


@pytest.fixture
def conn(live_server, transactional_db):
    return connect(live_server.url, token("admin", "ops"))


@pytest.fixture
def hosts(transactional_db):
    """h1 reaches physnet1, h2 physnet2, h3 only physnet3 (no segment)."""
    HostAgentFactory(host="h1", physnets=["physnet1"])
    HostAgentFactory(host="h2", physnets=["physnet2"], bridge="br-ex2")
    HostAgentFactory(host="h3", physnets=["physnet3"], bridge="br-ex3")


def subnet_on(conn, network, segment, prefix: str, name: str):
    return conn.network.create_subnet(
        network_id=network.id,
        segment_id=segment.id,
        name=name,
        ip_version=4,
        cidr=f"{prefix}.0/24",
        allocation_pools=[{"start": f"{prefix}.10", "end": f"{prefix}.20"}],
    )


@pytest.fixture
def routed(conn):
    """A routed network as the Neutron guide builds it: the network with
    its first segment as provider attributes, a second segment added, and
    one subnet on each."""
    network = conn.network.create_network(
        name="routed",
        provider_network_type="vlan",
        provider_physical_network="physnet1",
        provider_segmentation_id=1101,
    )
    (seg1,) = conn.network.segments(network_id=network.id)
    seg2 = conn.network.create_segment(
        network_id=network.id,
        name="seg2",
        network_type="vlan",
        physical_network="physnet2",
        segmentation_id=1102,
    )
    return SimpleNamespace(
        network=network,
        seg1=seg1,
        seg2=seg2,
        sub1=subnet_on(conn, network, seg1, "10.251.1", "sub1"),
        sub2=subnet_on(conn, network, seg2, "10.251.2", "sub2"),
    )


# --- routed networks ----------------------------------------------------------------


def test_segments_added_to_a_plain_network(conn):
    # Like ML2, a network created without provider attributes gets a tenant
    # (vxlan) segment; the vlan segments are added next to it.
    network = conn.network.create_network(name="plain")
    other = conn.network.create_network(name="other")
    seg1 = conn.network.create_segment(
        network_id=network.id,
        name="seg1",
        network_type="vlan",
        physical_network="physnet1",
        segmentation_id=1101,
    )
    seg2 = conn.network.create_segment(
        network_id=network.id,
        name="seg2",
        network_type="vlan",
        physical_network="physnet2",
        segmentation_id=1102,
    )
    assert (seg1.network_id, seg1.segmentation_id) == (network.id, 1101)

    listed = {s.id: s for s in conn.network.segments(network_id=network.id)}
    (tenant,) = set(listed) - {seg1.id, seg2.id}
    assert (listed[tenant].network_type, listed[tenant].physical_network) == ("vxlan", None)
    assert listed[tenant].segmentation_id >= 1000  # from BERTH_VNI_RANGE
    assert (listed[seg2.id].physical_network, listed[seg2.id].segmentation_id) == ("physnet2", 1102)
    assert len(list(conn.network.segments(network_id=other.id))) == 1

    sub1 = subnet_on(conn, network, seg1, "10.251.1", "sub1")
    assert (sub1.segment_id, sub1.cidr) == (seg1.id, "10.251.1.0/24")
    assert sub1.allocation_pools == [{"start": "10.251.1.10", "end": "10.251.1.20"}]
    # Three segments: the admin sees them as the multi-provider list.
    shown = conn.network.get_network(network.id)
    assert shown.provider_network_type is None
    assert {
        (s["provider:network_type"], s["provider:physical_network"]) for s in shown.segments
    } == {
        ("vxlan", None),
        ("vlan", "physnet1"),
        ("vlan", "physnet2"),
    }
    assert shown.subnet_ids == [sub1.id]


def test_routed_network_with_provider_attributes(conn, routed):
    seg1 = routed.seg1
    assert (seg1.network_type, seg1.physical_network, seg1.segmentation_id) == (
        "vlan",
        "physnet1",
        1101,
    )
    assert {s.id for s in conn.network.segments(network_id=routed.network.id)} == {
        seg1.id,
        routed.seg2.id,
    }
    assert [s.id for s in conn.network.subnets(segment_id=routed.seg2.id)] == [routed.sub2.id]
    assert sorted(conn.network.get_network(routed.network.id).subnet_ids) == sorted(
        [routed.sub1.id, routed.sub2.id]
    )


def test_ip_availability_counts_pools_and_allocations(conn, routed):
    conn.network.create_port(
        network_id=routed.network.id,
        fixed_ips=[{"subnet_id": routed.sub1.id, "ip_address": "10.251.1.15"}],
    )
    availability = conn.network.get_network_ip_availability(routed.network.id)
    assert (availability.network_name, availability.total_ips, availability.used_ips) == (
        "routed",
        22,
        1,
    )
    per_subnet = {
        s["subnet_id"]: (s["cidr"], s["total_ips"], s["used_ips"])
        for s in availability.subnet_ip_availability
    }
    assert per_subnet == {
        routed.sub1.id: ("10.251.1.0/24", 11, 1),
        routed.sub2.id: ("10.251.2.0/24", 11, 0),
    }


def test_deferred_port_gets_its_ip_from_the_bound_hosts_segment(conn, routed, hosts):
    port = conn.network.create_port(network_id=routed.network.id, name="vm")
    assert (port.fixed_ips, port.ip_allocation) == ([], "deferred")
    assert (port.binding_host_id, port.binding_vif_type) == ("", "unbound")

    on_h2 = conn.network.update_port(port, binding_host_id="h2")
    (ip,) = on_h2.fixed_ips
    assert ip["subnet_id"] == routed.sub2.id and in_pool(ip["ip_address"], routed.sub2)
    assert (on_h2.binding_host_id, on_h2.binding_vif_type) == ("h2", "ovs")
    assert on_h2.binding_vif_details == OVS_DETAILS

    on_h1 = conn.network.update_port(port, binding_host_id="h1")
    assert [a["subnet_id"] for a in on_h1.fixed_ips] == [routed.sub1.id]
    assert in_pool(on_h1.fixed_ips[0]["ip_address"], routed.sub1)
    assert (on_h1.binding_host_id, on_h1.binding_vif_type) == ("h1", "ovs")
    # The address on physnet2 was given back.
    used = {
        s["subnet_id"]: s["used_ips"]
        for s in conn.network.get_network_ip_availability(routed.network.id).subnet_ip_availability
    }
    assert used == {routed.sub1.id: 1, routed.sub2.id: 0}


def test_binding_a_host_that_reaches_no_segment_conflicts(conn, routed, hosts):
    port = conn.network.create_port(network_id=routed.network.id)
    with pytest.raises(exceptions.ConflictException) as raised:
        conn.network.update_port(port, binding_host_id="h3")
    assert raised.value.status_code == 409
    assert neutron_error(raised.value)["type"] == "HostNotConnectedToAnySegment"
    assert "Host h3 is not connected to any segments" in raised.value.details
    unchanged = conn.network.get_port(port.id)
    assert (unchanged.binding_host_id, unchanged.fixed_ips) == ("", [])
    # Bound at creation: the same conflict, and no port is left behind.
    with pytest.raises(exceptions.ConflictException):
        conn.network.create_port(network_id=routed.network.id, name="x", binding_host_id="h3")
    assert list(conn.network.ports(name="x")) == []


def test_port_bound_at_creation_gets_its_ip_at_once(conn, routed, hosts):
    port = conn.network.create_port(network_id=routed.network.id, binding_host_id="h1")
    assert [a["subnet_id"] for a in port.fixed_ips] == [routed.sub1.id]
    assert in_pool(port.fixed_ips[0]["ip_address"], routed.sub1)
    assert (port.binding_host_id, port.binding_vif_type) == ("h1", "ovs")


def test_moving_to_a_full_segment_conflicts_and_keeps_the_port(conn, routed, hosts):
    for last in range(10, 21):  # fill sub1's pool
        conn.network.create_port(
            network_id=routed.network.id,
            fixed_ips=[{"subnet_id": routed.sub1.id, "ip_address": f"10.251.1.{last}"}],
        )
    port = conn.network.update_port(
        conn.network.create_port(network_id=routed.network.id), binding_host_id="h2"
    )
    with pytest.raises(exceptions.ConflictException) as raised:
        conn.network.update_port(port, binding_host_id="h1")
    assert neutron_error(raised.value)["type"] == "IpAddressGenerationFailure"
    after = conn.network.get_port(port.id)
    assert (after.binding_host_id, after.fixed_ips) == ("h2", port.fixed_ips)


def test_binding_an_unreported_host_on_a_routed_network_conflicts(conn, routed):
    port = conn.network.create_port(network_id=routed.network.id)
    with pytest.raises(exceptions.ConflictException) as raised:
        conn.network.update_port(port, binding_host_id="never-reported")
    assert neutron_error(raised.value)["type"] == "HostNotConnectedToAnySegment"


def test_a_failed_binding_is_retried_once_the_host_reports(conn):
    network = conn.network.create_network(
        name="vlan7",
        provider_network_type="vlan",
        provider_physical_network="physnet7",
        provider_segmentation_id=7,
    )
    conn.network.create_subnet(network_id=network.id, ip_version=4, cidr="10.7.0.0/24")
    port = conn.network.create_port(network_id=network.id)
    failed = conn.network.update_port(port, binding_host_id="h7")
    assert failed.binding_vif_type == "binding_failed"
    host_agent_report(report=HostNetworkReport(host="h7", physnets={"physnet7": {"bridge": "br7"}}))
    # By id: the SDK sends only attributes that differ from the object's.
    retried = conn.network.update_port(port.id, binding_host_id="h7")
    assert (retried.binding_vif_type, retried.binding_vif_details) == ("ovs", OVS_DETAILS)


# --- ports ----------------------------------------------------------------------------


def test_find_port_by_mac_address(conn):
    network = conn.network.create_network(name="macs")
    other_network = conn.network.create_network(name="elsewhere")
    port = conn.network.create_port(network_id=network.id, mac_address="FA:16:3E:AA:BB:CC")
    conn.network.create_port(network_id=network.id, mac_address="fa:16:3e:aa:bb:cd")
    # The same MAC on another network is allowed, as in Neutron.
    twin = conn.network.create_port(network_id=other_network.id, mac_address="fa:16:3e:aa:bb:cc")
    assert port.mac_address == "fa:16:3e:aa:bb:cc"

    found = list(conn.network.ports(mac_address="fa:16:3e:aa:bb:cc", network_id=network.id))
    assert [p.id for p in found] == [port.id]
    assert {p.id for p in conn.network.ports(mac_address="fa:16:3e:aa:bb:cc")} == {
        port.id,
        twin.id,
    }


def test_duplicate_mac_on_a_network_conflicts(conn):
    network = conn.network.create_network(name="macs")
    conn.network.create_port(network_id=network.id, mac_address="FA:16:3E:AA:BB:CC")
    with pytest.raises(exceptions.ConflictException) as raised:
        conn.network.create_port(network_id=network.id, mac_address="fa:16:3e:aa:bb:cc")
    assert "The mac address fa:16:3e:aa:bb:cc is in use" in raised.value.details
    assert neutron_error(raised.value)["type"] == "MacAddressInUse"
    assert len(list(conn.network.ports(network_id=network.id))) == 1


def test_fixed_ip_in_use_conflicts(conn, routed):
    wanted = [{"subnet_id": routed.sub1.id, "ip_address": "10.251.1.15"}]
    first = conn.network.create_port(network_id=routed.network.id, fixed_ips=wanted)
    assert first.fixed_ips == wanted
    assert first.ip_allocation == "immediate"
    with pytest.raises(exceptions.ConflictException) as raised:
        conn.network.create_port(network_id=routed.network.id, fixed_ips=wanted)
    assert "10.251.1.15 is in use" in raised.value.details
    assert neutron_error(raised.value)["type"] == "IpAddressAlreadyAllocated"
    assert [p.id for p in conn.network.ports(network_id=routed.network.id)] == [first.id]


def test_find_network_by_name(conn):
    network = conn.network.create_network(name="by-name")
    conn.network.create_network(name="decoy")
    # The SDK tries GET /networks/by-name first; that must be a 404.
    with pytest.raises(exceptions.NotFoundException):
        conn.network.get_network("by-name")
    assert conn.network.find_network("by-name").id == network.id
    assert conn.network.find_network(network.id).name == "by-name"
    assert conn.network.find_network("missing") is None


def test_member_neither_sees_nor_sets_the_binding(live_server, conn, hosts):
    member = connect(live_server.url, token("member", "alpha"))
    network = member.network.create_network(name="mine")
    member.network.create_subnet(network_id=network.id, ip_version=4, cidr="10.9.0.0/24")
    port = member.network.create_port(network_id=network.id)
    assert len(port.fixed_ips) == 1 and port.ip_allocation == "immediate"
    for seen in (port, member.network.get_port(port.id)):
        assert seen.binding_host_id is None
        assert seen.binding_vif_type is None
        assert seen.binding_vif_details is None
        assert seen.binding_profile is None
    assert conn.network.get_port(port.id).binding_host_id == ""

    with pytest.raises(exceptions.ForbiddenException) as raised:
        member.network.update_port(port, binding_host_id="h1")
    assert "binding:host_id" in raised.value.details
    assert conn.network.get_port(port.id).binding_host_id == ""


# --- the openstack CLI ------------------------------------------------------------------


class OpenStackCLI:
    """The `openstack` command set up with the OS_* settings the demo
    prints (console.demo.cli_environment)."""

    def __init__(self, base: str, token: str, home: Path):
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        self.env.update(
            HOME=str(home),  # no ~/.config/openstack/clouds.yaml
            XDG_CONFIG_HOME=str(home),
            **cli_environment(base=base, token=token),
        )

    def _run(self, args) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(OPENSTACK_CLI), *args],
            env=self.env,
            cwd=self.home,  # nor a ./clouds.yaml
            capture_output=True,
            text=True,
            timeout=60,
        )

    def __call__(self, *args: str):
        """The parsed `-f json` output; else what the command printed, or
        None for nothing."""
        done = self._run(args)
        assert done.returncode == 0, done.stderr
        if "json" in args:
            # blazarclient prints "Created a new lease:" before the object.
            start = min(i for i in (done.stdout.find("{"), done.stdout.find("[")) if i >= 0)
            return json.loads(done.stdout[start:])
        return done.stdout.strip() or None

    def fails(self, *args: str) -> str:
        """What a command that docs/clients.md lists as not served says."""
        done = self._run(args)
        assert done.returncode != 0, done.stdout
        return done.stderr


@pytest.fixture
def cli(live_server, transactional_db, tmp_path):
    return OpenStackCLI(live_server.url, token("admin", "ops"), tmp_path)


def test_openstack_cli_routed_network_port_lifecycle(cli, conn, hosts):
    network = cli("network", "create", "cli-net", "-f", "json")
    assert (network["name"], network["status"]) == ("cli-net", "ACTIVE")

    segment = cli(
        "network",
        "segment",
        "create",
        "--network",
        "cli-net",
        "--network-type",
        "vlan",
        "--physical-network",
        "physnet1",
        "--segment",
        "1101",
        "seg1",
        "-f",
        "json",
    )
    assert (segment["network_id"], segment["segmentation_id"]) == (network["id"], 1101)

    subnet = cli(
        "subnet",
        "create",
        "--network",
        "cli-net",
        "--network-segment",
        "seg1",
        "--subnet-range",
        "10.251.1.0/24",
        "--allocation-pool",
        "start=10.251.1.10,end=10.251.1.20",
        "sub1",
        "-f",
        "json",
    )
    assert (subnet["segment_id"], subnet["cidr"]) == (segment["id"], "10.251.1.0/24")
    assert subnet["allocation_pools"] == [{"start": "10.251.1.10", "end": "10.251.1.20"}]

    port = cli(
        "port",
        "create",
        "--network",
        "cli-net",
        "--mac-address",
        "FA:16:3E:AA:BB:CC",
        "--fixed-ip",
        "subnet=sub1,ip-address=10.251.1.50",
        "p1",
        "-f",
        "json",
    )
    assert port["mac_address"] == "fa:16:3e:aa:bb:cc"
    # A requested address may lie outside the pools (as in Neutron); it still counts as used.
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.251.1.50"}]

    listed = cli("port", "list", "--mac-address", "fa:16:3e:aa:bb:cc", "-f", "json")
    assert [(p["ID"], p["Name"]) for p in listed] == [(port["id"], "p1")]

    assert cli("port", "set", "--host", "h1", "p1") is None
    bound = conn.network.get_port(port["id"])
    assert (bound.binding_host_id, bound.binding_vif_type) == ("h1", "ovs")
    assert bound.fixed_ips == port["fixed_ips"]

    availability = cli("ip", "availability", "show", "cli-net", "-f", "json")
    assert (availability["network_id"], availability["total_ips"], availability["used_ips"]) == (
        network["id"],
        11,
        1,
    )

    assert cli("port", "delete", "p1") is None
    assert not Port.objects.filter(pk=port["id"]).exists()


def command(text: str) -> list[str]:
    return [*text.split(), "-f", "json"]


def test_openstack_cli_lists_shows_changes_and_deletes(cli, conn, hosts):
    """The rest of docs/clients.md's networking commands, each run as written there."""
    network = cli(*command("network create cli-net"))
    assert [n["ID"] for n in cli(*command("network list"))] == [network["id"]]
    assert cli("network", "set", "--name", "renamed", "--mtu", "1400", "cli-net") is None
    assert cli(*command("network show renamed"))["mtu"] == 1400
    segment = cli(
        *command(
            "network segment create --network renamed --network-type vlan "
            "--physical-network physnet1 --segment 1101 seg1"
        )
    )
    assert segment["id"] in {s["ID"] for s in cli(*command("network segment list"))}
    assert cli("network", "segment", "set", "--description", "rack 1", "seg1") is None
    assert cli(*command("network segment show seg1"))["description"] == "rack 1"
    subnet = cli(
        *command(
            "subnet create --network renamed --network-segment seg1 "
            "--subnet-range 10.251.1.0/24 --dns-nameserver 8.8.8.8 sub1"
        )
    )
    assert [s["ID"] for s in cli(*command("subnet list"))] == [subnet["id"]]
    assert cli("subnet", "set", "--dns-nameserver", "1.1.1.1", "sub1") is None
    assert cli("subnet", "unset", "--dns-nameserver", "8.8.8.8", "sub1") is None
    assert cli(*command("subnet show sub1"))["dns_nameservers"] == ["1.1.1.1"]

    port = cli(*command("port create --network renamed --vnic-type normal p1"))
    assert port["fixed_ips"] == []  # routed: deferred until bound
    assert [p["ID"] for p in cli(*command("port list --network renamed"))] == [port["id"]]
    assert cli("port", "set", "--host", "h1", "p1") is None
    assert [p["ID"] for p in cli(*command("port list --host h1"))] == [port["id"]]
    (address,) = cli(*command("port show p1"))["fixed_ips"]
    assert address["subnet_id"] == subnet["id"]
    assert cli("port", "set", "--device", "d-1", "--device-owner", "baremetal:none", "p1") is None
    assert [p["ID"] for p in cli(*command("port list --device-id d-1"))] == [port["id"]]
    assert [p["ID"] for p in cli(*command("port list --device-owner baremetal:none"))] == [
        port["id"]
    ]
    wanted = f"subnet=sub1,ip-address={ipaddress.ip_address(address['ip_address']) + 1}"
    assert cli("port", "set", "--fixed-ip", wanted, "p1") is None
    assert len(conn.network.get_port(port["id"]).fixed_ips) == 2
    first = f"subnet=sub1,ip-address={address['ip_address']}"
    assert cli("port", "unset", "--fixed-ip", first, "p1") is None
    assert [a["ip_address"] for a in conn.network.get_port(port["id"]).fixed_ips] == [
        str(ipaddress.ip_address(address["ip_address"]) + 1)
    ]
    # A null binding:host_id unbinds, as in Neutron.
    assert cli("port", "unset", "--host", "p1") is None
    assert conn.network.get_port(port["id"]).binding_host_id == ""

    (availability,) = cli(*command("ip availability list"))
    assert (availability["Network Name"], availability["Used IPs"]) == ("renamed", 1)

    for deleted in ("port delete p1", "subnet delete sub1", "network segment delete seg1"):
        assert cli(*deleted.split()) is None
    assert cli("network", "delete", "renamed") is None
    assert cli(*command("network list")) == []


def test_openstack_cli_agents_and_extensions(cli, hosts):
    agents = {a["Host"]: a for a in cli(*command("network agent list"))}
    assert sorted(agents) == ["h1", "h2", "h3"]
    assert cli(*command(f"network agent show {agents['h1']['ID']}"))["host"] == "h1"
    assert cli("network", "agent", "set", "--disable", agents["h1"]["ID"]) is None
    assert cli(*command(f"network agent show {agents['h1']['ID']}"))["admin_state_up"] is False
    aliases = {e["Alias"] for e in cli(*command("extension list --network"))}
    assert {"binding", "provider", "multi-provider", "network-ip-availability"} <= aliases


def test_openstack_cli_what_berth_does_not_serve_fails(cli):
    assert "could not be found" in cli.fails("router", "list")
    assert "could not be found" in cli.fails("security", "group", "list")


def test_the_demo_hint_names_what_docs_clients_md_lists():
    """The demo prints which CLI commands work (console.demo); the docs list
    them one by one, and the tests run them."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "clients.md").read_text()
    works = docs[docs.index("### Works") : docs.index("### Not served")]
    for family in CLI_WORKS:
        first = family.split("/")[0]  # "flavor list/show/delete" -> "flavor list"
        assert f"`{first}" in works, family
    hint = " ".join(" ".join(cli_hint(cli_environment(base="http://b", token="t"))).split())
    assert all(family in hint for family in CLI_WORKS)
    assert "docs/clients.md" in hint
