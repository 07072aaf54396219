"""Leases that know the network: hosts on one segment (or spread over
them) with addresses held for them, addresses alone, and what no one else
may take meanwhile."""

import pytest
import time_machine

from config.errors import Conflict
from networking import services as networking
from networking.models import AddressHold, Port
from reservations import events, services
from reservations.models import HostAllocation, Lease
from tests.conftest import Caller
from tests.factories import HostFactory, NetworkFactory, subnets_by_segment
from tests.reservations.conftest import T0, at

V1 = "/reservation/v1"


@pytest.fixture
def racks(db):
    """Project lab's routed network: rack1 (physnet1, pool of 5 addresses)
    with reservable hosts a1..a3, rack2 (physnet2, pool of 8) with b1..b3.
    Returns the member's API caller, with the network on it."""
    member = Caller("lab", "member", username="lab-member")
    member.network = NetworkFactory(
        project=member.project, two_racks=True, rack1_pool=5, rack2_pool=8
    )
    for rack, physnet in (("a", "physnet1"), ("b", "physnet2")):
        for n in (1, 2, 3):
            HostFactory(name=f"{rack}{n}", physnets=[physnet], reservable=True)
    return member


def body(caller, name="net-lease", start=1, end=2, **reservation):
    return {
        "name": name,
        "start_date": f"{at(start):%Y-%m-%d %H:%M}",
        "end_date": f"{at(end):%Y-%m-%d %H:%M}",
        "reservations": [
            {
                "resource_type": "physical:host",
                "min": 2,
                "max": 2,
                "network_id": str(caller.network.pk),
                **reservation,
            }
        ],
        "events": [],
    }


def create(caller, **kwargs):
    with time_machine.travel(T0, tick=False):
        return caller.post(f"{V1}/leases", body(caller, **kwargs))


def test_hosts_share_a_segment_with_their_addresses_held(racks):
    response = create(racks, same_segment=True, addresses_per_host=2)
    assert response.status_code == 201, response.json()
    reservation = response.json()["lease"]["reservations"][0]
    # rack1's 5 addresses fit 2 hosts x 2 too, but rack2 has the most room.
    subnet = subnets_by_segment(racks.network)["rack2"]
    assert sorted(reservation["hosts"]) in (["b1", "b2"], ["b1", "b3"], ["b2", "b3"])
    assert reservation["segment_id"] == str(subnet.segment_id)
    assert reservation["same_segment"] is True and reservation["addresses_per_host"] == 2
    held = reservation["addresses"]
    assert len(held) == 4 and {a["subnet_id"] for a in held} == {str(subnet.pk)}
    assert all(a["start_date"].startswith(f"{at(1):%Y-%m-%dT%H:%M}") for a in held)


def test_addresses_decide_the_segment(racks):
    """Three addresses for each of two hosts: only rack2's 8 can; a second
    such lease at the same time finds addresses for one host on either
    rack, and is refused with the reason per segment, writing nothing."""
    fits = create(racks, same_segment=True, addresses_per_host=3)
    assert fits.status_code == 201
    assert {h[0] for h in fits.json()["lease"]["reservations"][0]["hosts"]} == {"b"}
    refused = create(racks, name="second", same_segment=True, addresses_per_host=3)
    assert refused.status_code == 409
    message = refused.json()["error_message"]
    assert "segment rack1 has addresses for 1 hosts" in message
    assert "segment rack2 has addresses for 0 hosts" in message
    assert Lease.objects.count() == 1 and AddressHold.objects.count() == 6


def test_spread_takes_hosts_of_each_segment_in_turn(racks):
    response = create(racks, min=4, max=4, addresses_per_host=1)
    assert response.status_code == 201, response.json()
    reservation = response.json()["lease"]["reservations"][0]
    assert sorted(h[0] for h in reservation["hosts"]) == ["a", "a", "b", "b"]
    segments = {a["segment_id"] for a in reservation["addresses"]}
    assert len(reservation["addresses"]) == 4 and len(segments) == 2


@pytest.mark.parametrize(
    "change, field",
    [
        ({"network_id": "a0f8e5a8-0000-4000-8000-000000000000"}, "network_id"),
        ({"network_id": "not-a-uuid"}, "network_id"),
        ({"addresses_per_host": 9, "same_segment": True}, "addresses_per_host"),
        ({"min": 4, "max": 4, "same_segment": True}, "same_segment"),
    ],
)
def test_bad_topology_is_refused_naming_the_field(racks, change, field):
    response = create(racks, **change)
    assert response.status_code == 400, response.json()
    assert f"'{field}'" in response.json()["error_message"]
    assert not Lease.objects.exists() and not AddressHold.objects.exists()


def test_a_foreign_network_is_an_unknown_one(racks):
    other = Caller("other", "member", username="o")
    other.network = racks.network
    response = create(other, same_segment=True)
    assert response.status_code == 400
    assert "'network_id'" in response.json()["error_message"]


def test_same_segment_needs_a_network(racks):
    lease = body(racks, same_segment=True)
    del lease["reservations"][0]["network_id"]
    with time_machine.travel(T0, tick=False):
        response = racks.post(f"{V1}/leases", lease)
    assert response.status_code == 400 and "'same_segment'" in response.json()["error_message"]


def _port(project, network, **fields):
    return networking.port_create(project=project, network=network, **fields)


def test_held_addresses_go_to_no_other_port(racks):
    """rack2's 8 addresses all held from T0+1h: a port bound there now gets
    none, and asking for one by name says a lease holds it."""
    assert create(racks, min=2, max=2, same_segment=True, addresses_per_host=4).status_code == 201
    subnet = subnets_by_segment(racks.network)["rack2"]
    held = sorted(AddressHold.objects.values_list("address", flat=True))
    assert len(held) == 8
    port = _port(racks.project, racks.network)
    with pytest.raises(Conflict) as raised:
        networking.port_bind(port=port, host="b3")
    assert raised.value.type == "IpAddressGenerationFailure"
    with pytest.raises(Conflict) as raised:
        _port(racks.project, racks.network, fixed_ips=[{"ip_address": held[0]}])
    assert "held by a lease" in raised.value.message
    assert not subnet.allocations.exists()


def test_the_leases_servers_get_its_addresses(racks):
    reservation = create(racks, same_segment=True, addresses_per_host=1).json()["lease"]
    reservation = reservation["reservations"][0]
    held = {a["address"] for a in reservation["addresses"]}
    with time_machine.travel(at(1.5), tick=False):
        port = _port(racks.project, racks.network)
        bound = networking.port_bind(
            port=port, host=reservation["hosts"][0], holder=reservation["id"]
        )
    assert {a.address for a in bound.fixed_ips.all()} <= held
    assert bound.fixed_ips.count() == 1


def test_a_port_of_another_project_naming_the_holder_gets_none(racks):
    """A hint names a reservation, but its addresses go to its own
    project's ports only: another project's port bound with that holder
    finds rack2's addresses all held."""
    created = create(racks, same_segment=True, addresses_per_host=4).json()["lease"]
    reservation = created["reservations"][0]
    other = Caller("other", "admin", username="o")
    port = Port.objects.create(
        project=other.project, network=racks.network, mac_address="fa:16:3e:00:00:99"
    )
    host = reservation["hosts"][0]
    with time_machine.travel(at(1.5), tick=False), pytest.raises(Conflict) as raised:
        networking.port_bind(port=port, host=host, holder=reservation["id"])
    assert raised.value.type == "IpAddressGenerationFailure"


def test_extend_moves_addresses_with_hosts_or_nothing(racks):
    first = create(racks, same_segment=True, addresses_per_host=4).json()["lease"]
    # The next lease wants rack2's addresses right after the first.
    second = create(racks, name="next", start=2, end=3, same_segment=True, addresses_per_host=4)
    assert second.status_code == 201
    with time_machine.travel(T0, tick=False):
        blocked = racks.put(f"{V1}/leases/{first['id']}", {"end_date": f"{at(2.5):%Y-%m-%d %H:%M}"})
    assert blocked.status_code == 409
    holds = AddressHold.objects.filter(holder=first["reservations"][0]["id"])
    assert set(holds.values_list("end_at", flat=True)) == {at(2)}
    with time_machine.travel(T0, tick=False):
        earlier = racks.put(f"{V1}/leases/{first['id']}", {"end_date": f"{at(1.5):%Y-%m-%d %H:%M}"})
    assert earlier.status_code == 200
    assert set(holds.values_list("end_at", flat=True)) == {at(1.5)}
    ends = HostAllocation.objects.filter(reservation_id=first["reservations"][0]["id"])
    assert {a.end_at for a in ends} == {at(1.5)}


def test_the_end_lets_the_addresses_go_and_delete_drops_them(racks):
    created = create(racks, same_segment=True, addresses_per_host=1).json()["lease"]
    lease = Lease.objects.get(pk=created["id"])
    with time_machine.travel(at(2.5), tick=False):
        events.sweep()
    assert {h.end_at for h in AddressHold.objects.all()} == {at(2)}
    pending = create(racks, name="p", start=5, end=6, same_segment=True, addresses_per_host=1)
    assert pending.status_code == 201
    services.lease_delete(lease=Lease.objects.get(pk=pending.json()["lease"]["id"]))
    assert set(AddressHold.objects.values_list("holder", flat=True)) == {
        lease.reservations.get().pk
    }


def test_addresses_alone(racks):
    """A lease of addresses (Blazar's virtual:floatingip): named ones and
    a count, refused whole when one named is taken."""
    subnet = subnets_by_segment(racks.network)["rack1"]
    lease = {
        **body(racks),
        "reservations": [
            {
                "resource_type": "virtual:floatingip",
                "network_id": str(racks.network.pk),
                "amount": 3,
                "required_floatingips": ["10.1.0.12"],
            }
        ],
    }
    with time_machine.travel(T0, tick=False):
        response = racks.post(f"{V1}/leases", lease)
        assert response.status_code == 201, response.json()
        again = racks.post(f"{V1}/leases", {**lease, "name": "again"})
    reservation = response.json()["lease"]["reservations"][0]
    assert reservation["amount"] == 3 and len(reservation["addresses"]) == 3
    assert "10.1.0.12" in {a["address"] for a in reservation["addresses"]}
    assert subnet.holds.count() == 3
    assert again.status_code == 409 and subnet.holds.count() == 3
    # While it runs, a port of its project asking for a held address by
    # name takes it; before, no one does.
    with pytest.raises(Conflict):
        _port(racks.project, racks.network, fixed_ips=[{"ip_address": "10.1.0.12"}])
    with time_machine.travel(at(1.5), tick=False):
        port = _port(racks.project, racks.network, fixed_ips=[{"ip_address": "10.1.0.12"}])
    assert port.fixed_ips.get().address == "10.1.0.12"


def test_a_refusal_offers_another_segment(racks):
    """Three hosts on one segment: each rack has three, but one of each is
    taken (spread); spread over the racks they fit, and that is offered."""
    assert create(racks, name="one", min=2, max=2).status_code == 201
    asked = body(racks, name="three", min=3, max=3, same_segment=True)
    with time_machine.travel(T0, tick=False):
        refused = racks.post(f"{V1}/leases", asked)
        assert refused.status_code == 409, refused.json()
        offered = refused.json()["answers"]["alternatives"]
        spread = [a["request"] for a in offered if "spread" in a["why"]]
        assert len(spread) == 1 and spread[0]["reservations"][0]["same_segment"] is False
        assert racks.post(f"{V1}/leases", spread[0]).status_code == 201


def test_held_addresses_show_on_the_network_view_and_the_calendar(racks, admin_client):
    from django.urls import reverse

    assert create(racks, same_segment=True, addresses_per_host=3).status_code == 201
    page = admin_client.get(reverse("admin:networking_network_view", args=[racks.network.pk]))
    rack2 = page.content.decode().split('data-segment="rack2"')[1].split("</tr>")[0]
    assert 'data-held="6"' in rack2 and "6 held by leases" in rack2
    data = admin_client.get(
        "/admin/reservations/calendar/data", {"start": f"{T0:%Y-%m-%d}", "zoom": "day"}
    ).json()
    (row,) = data["addresses"]
    assert (row["segment"], row["held"], row["holders"]) == ("rack2", 6, 1)
    page = admin_client.get(
        "/admin/reservations/calendar/", {"start": f"{T0:%Y-%m-%d}", "zoom": "day"}
    )
    assert '<tr data-segment="rack2">' in page.content.decode()
    (reservation,) = Lease.objects.get().reservations.all()
    page = admin_client.get(
        reverse("admin:reservations_reservation_change", args=[reservation.pk])
    ).content.decode()
    for address in AddressHold.objects.values_list("address", flat=True):
        assert address in page


def test_readiness_swaps_a_host_cut_off_from_the_segment_for_one_on_it(racks):
    """A host of a rack2 lease re-cabled to physnet1 before the start is
    not ready (it no longer reaches the lease's segment): it is swapped for
    rack2's free host, not for one of rack1's."""
    created = create(racks, same_segment=True, addresses_per_host=1).json()["lease"]
    hosts = created["reservations"][0]["hosts"]
    (spare,) = {"b1", "b2", "b3"} - set(hosts)
    with time_machine.travel(at(1), tick=False):
        # Every host reports again (they would be down otherwise), hosts[0]
        # cabled to physnet1 now.
        for rack, physnet in (("a", "physnet1"), ("b", "physnet2")):
            for n in (1, 2, 3):
                name = f"{rack}{n}"
                HostFactory(name=name, physnets=["physnet1" if name == hosts[0] else physnet])
        events.sweep()
    lease = Lease.objects.get(pk=created["id"])
    assert lease.status == "ACTIVE" and not lease.degraded
    now_held = racks.get(f"{V1}/leases/{lease.pk}").json()["lease"]["reservations"][0]["hosts"]
    assert sorted(now_held) == sorted([hosts[1], spare])
    started = lease.notification_set.get(event_type="lease.event.start_lease").payload
    heads_up = lease.notification_set.get(event_type="lease.event.heads_up").payload
    checked = {c["host"]: c["problems"] for c in heads_up["checked"] + started["checked"]}
    assert any("not reaching segment" in p for p in checked[hosts[0]])
