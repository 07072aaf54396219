"""The allocator as a whole: whatever the pools, it hands out exactly the
pool addresses, each once, then reports exhaustion."""

import netaddr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.errors import Conflict
from identity.auth import RequestContext
from networking import services
from tests.factories import HostAgentFactory, ProjectFactory


@st.composite
def pool_layouts(draw):
    """1-3 disjoint pools inside 10.40.0.0/27, avoiding .0, .1 (gateway), .31."""
    cuts = sorted(draw(st.sets(st.integers(2, 30), min_size=2, max_size=6)))
    pairs = list(zip(cuts[::2], cuts[1::2], strict=False))
    return [{"start": f"10.40.0.{a}", "end": f"10.40.0.{b}"} for a, b in pairs]


@pytest.mark.django_db
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pools=pool_layouts())
def test_allocation_fills_the_pools_exactly_once(pools):
    project = ProjectFactory()
    context = RequestContext(user_id="u", project=project, role="admin")
    network = services.network_create(context=context, project=project)
    subnet = services.subnet_create(
        project=project, network=network, cidr="10.40.0.0/27", allocation_pools=pools
    )
    expected = netaddr.IPSet()
    for pool in pools:
        expected.add(netaddr.IPRange(pool["start"], pool["end"]))
    got = []
    with pytest.raises(Conflict) as raised:
        for _ in range(expected.size + 1):
            got.append(services.port_create(project=project, network=network).fixed_ips.get())
    assert raised.value.type == "IpAddressGenerationFailure"
    addresses = [netaddr.IPAddress(a.address) for a in got]
    assert len(addresses) == len(set(addresses)) == expected.size
    assert all(a in expected and a.words[-1] != 1 for a in addresses)
    assert all(a.subnet_id == subnet.id for a in got)


@pytest.mark.django_db
def test_a_bind_that_fails_writes_nothing_so_the_caller_can_go_on():
    """port_bind runs in its caller's transaction without a savepoint: when
    a baremetal NIC's MAC is taken, it says so before taking an address."""
    project = ProjectFactory()
    context = RequestContext(user_id="u", project=project, role="admin")
    network = services.network_create(
        context=context,
        project=project,
        segments=[{"network_type": "vlan", "physical_network": "provision", "segmentation_id": 7}],
    )
    services.subnet_create(
        project=project, network=network, segment=network.segments.get(), cidr="10.41.0.0/24"
    )
    HostAgentFactory(
        host="bm-1",
        baremetal=True,
        baremetal_nics=[{"mac_address": "52:54:00:00:00:07", "physical_network": "provision"}],
    )
    services.port_create(project=project, network=network, mac_address="52:54:00:00:00:07")
    port = services.port_create(project=project, network=network, binding_vnic_type="baremetal")
    with pytest.raises(Conflict) as raised:
        services.port_bind(port=port, host="bm-1")
    assert raised.value.type == "MacAddressInUse"
    # The transaction goes on, and the port is as it was: no address, unbound.
    port.refresh_from_db()
    assert (port.binding_host, port.fixed_ips.count()) == ("", 0)


@pytest.mark.django_db
def test_a_generated_mac_already_taken_is_drawn_again(monkeypatch):
    """A random MAC goes straight to the port's insert: when the network has it
    already, the unique constraint refuses it, the port's savepoint undoes
    the attempt (quota and addresses included) and another MAC is drawn;
    when every draw is taken, Neutron's MacAddressGenerationFailure."""
    project = ProjectFactory()
    context = RequestContext(user_id="u", project=project, role="admin")
    network = services.network_create(context=context, project=project)
    services.subnet_create(project=project, network=network, cidr="10.42.0.0/29")
    taken = services.port_create(project=project, network=network, mac_address="fa:16:3e:00:00:01")
    draws = iter(["fa:16:3e:00:00:01", "fa:16:3e:00:00:01", "fa:16:3e:00:00:02"])
    monkeypatch.setattr(services.ipam, "random_mac", lambda base, rng: next(draws))
    port = services.port_create(project=project, network=network)
    assert port.mac_address == "fa:16:3e:00:00:02"
    assert next(draws, None) is None
    # The refused attempts left no port and no address behind.
    assert network.ports.count() == 2
    assert sorted(a.port_id for a in services.IPAllocation.objects.all()) == sorted(
        [taken.pk, port.pk]
    )
    monkeypatch.setattr(services.ipam, "random_mac", lambda base, rng: "fa:16:3e:00:00:02")
    with pytest.raises(Conflict) as raised:
        services.port_create(project=project, network=network)
    assert raised.value.type == "MacAddressGenerationFailure"
    assert network.ports.count() == 2


@pytest.mark.django_db
def test_an_address_comes_from_the_pools_as_they_are_not_as_read():
    """The first pick inserts only while the subnet's pools are those its
    caller read: pools changed since are read again, under the subnet's
    lock, and the address comes from them."""
    project = ProjectFactory()
    context = RequestContext(user_id="u", project=project, role="admin")
    network = services.network_create(context=context, project=project)
    read = services.subnet_create(
        project=project,
        network=network,
        cidr="10.41.0.0/24",
        allocation_pools=[{"start": "10.41.0.10", "end": "10.41.0.19"}],
    )
    now = [{"start": "10.41.0.100", "end": "10.41.0.109"}]
    services.subnet_update(subnet=read, allocation_pools=now)
    port = services.port_create(project=project, network=network, fixed_ips=[])
    allocation = services.ip_allocate(port=port, subnet=read)
    assert netaddr.IPAddress(allocation.address) in netaddr.IPRange(now[0]["start"], now[0]["end"])


@pytest.mark.django_db
def test_a_subnet_deleted_meanwhile_has_no_address_to_give():
    """A subnet deleted after its caller read it (a delete that won the
    race for its row) gives no address: the pick says the subnet is out of
    addresses (409), so a bind goes on to another segment or host."""
    project = ProjectFactory()
    context = RequestContext(user_id="u", project=project, role="admin")
    network = services.network_create(context=context, project=project)
    read = services.subnet_create(project=project, network=network, cidr="10.42.0.0/29")
    port = services.port_create(project=project, network=network, fixed_ips=[])
    services.subnet_delete(subnet=read)
    with pytest.raises(Conflict) as raised:
        services.ip_allocate(port=port, subnet=read)
    assert raised.value.type == "IpAddressGenerationFailure"
    assert not port.fixed_ips.exists()


@pytest.mark.django_db
def test_ports_made_together_are_all_or_none(monkeypatch):
    """ports_create makes each port as port_create would (an address now on
    a plain network, each its own), in one quota check and one insert; a
    quota short of them all, or a MAC drawn twice, leaves none."""
    from identity.quotas import quota_set

    project = ProjectFactory()
    context = RequestContext(user_id="u", project=project, role="admin")
    network = services.network_create(context=context, project=project)
    services.subnet_create(project=project, network=network, cidr="10.43.0.0/28")
    made = services.ports_create(
        project=project, network=network, ports=[{"device_id": "a"}, {"device_id": "b"}]
    )
    assert [p.device_id for p in made] == ["a", "b"]
    assert all(p.ip_allocation == "immediate" and p.fixed_ips.count() == 1 for p in made)
    assert len({p.mac_address for p in made}) == 2
    quota_set(project=project, resource="port", limit=3)
    with pytest.raises(Conflict):
        services.ports_create(project=project, network=network, ports=[{}, {}])
    monkeypatch.setattr(services.ipam, "random_mac", lambda base, rng: "fa:16:3e:00:00:09")
    quota_set(project=project, resource="port", limit=-1)
    with pytest.raises(services.IntegrityError):
        services.ports_create(project=project, network=network, ports=[{}, {}])
    assert network.ports.count() == 2
    assert services.IPAllocation.objects.count() == 2
