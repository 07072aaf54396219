"""The networking admin, through Django's test client as a superuser, and
the demo's network setup."""

import re
from types import SimpleNamespace

import pytest
from django.contrib import admin
from django.urls import reverse

from networking import services
from networking.models import (
    HostAgent,
    IPAllocation,
    Network,
    Port,
    Segment,
    Subnet,
    VifType,
)
from tests.factories import HostAgentFactory, NetworkFactory, ProjectFactory

pytestmark = pytest.mark.django_db

MODELS = [Network, Segment, Subnet, Port, IPAllocation, HostAgent]


def url(model, view: str, *args) -> str:
    return reverse(f"admin:networking_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def cloud(db):
    """A routed network (rack1: physnet1 VLAN 101, 10.1.0.0/24; rack2: physnet2
    VLAN 102, 10.2.0.0/24), host compute-1 on physnet1 with a baremetal NIC,
    port "bound" bound on compute-1 and port "spare" with a fixed IP on rack2."""
    project = ProjectFactory(name="admin-tests")
    network = NetworkFactory(project=project, two_racks=True)
    HostAgentFactory(
        host="compute-1",
        baremetal_nics=[{"mac_address": "52:54:00:00:00:01", "physical_network": "physnet1"}],
    )
    bound = services.port_create(
        project=project, network=network, name="bound", mac_address="fa:16:3e:aa:bb:01"
    )
    bound = services.port_bind(port=bound, host="compute-1")
    spare = services.port_create(
        project=project,
        network=network,
        name="spare",
        mac_address="fa:16:3e:aa:bb:02",
        fixed_ips=[{"ip_address": "10.2.0.77"}],
    )
    return SimpleNamespace(project=project, network=network, bound=bound, spare=spare)


def test_the_expected_models_are_registered():
    registered = {m for m in admin.site._registry if m._meta.app_label == "networking"}
    assert registered == set(MODELS)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_changelist_and_change_pages_render(admin_client, cloud, model):
    response = admin_client.get(url(model, "changelist"))
    assert response.status_code == 200
    rows = list(response.context["cl"].result_list)
    assert rows
    response = admin_client.get(url(model, "change", rows[0].pk))
    assert response.status_code == 200


def test_network_list_counts_segments_subnets_and_ports(admin_client, cloud):
    response = admin_client.get(url(Network, "changelist"))
    [network] = response.context["cl"].result_list
    assert (network.segment_count, network.subnet_count, network.port_count) == (2, 2, 2)


def test_subnet_list_shows_used_and_total_ips(admin_client, cloud):
    response = admin_client.get(url(Subnet, "changelist"))
    usage = {s.cidr: s.used_ips for s in response.context["cl"].result_list}
    assert usage == {"10.1.0.0/24": 1, "10.2.0.0/24": 1}
    assert b"1 / 253" in response.content


def test_network_change_page_shows_ip_availability_per_segment(admin_client, cloud):
    # One more port on rack1, so the two segments differ.
    services.port_create(project=cloud.project, network=cloud.network, binding_host="compute-1")
    response = admin_client.get(url(Network, "change", cloud.network.pk))
    html = response.content.decode()
    rows = dict(re.findall(r"<tr><th>segment (rack\d)[^<]*</th><td>([^<]*)</td></tr>", html))
    assert rows == {"rack1": "2 / 253", "rack2": "1 / 253"}


@pytest.mark.parametrize(
    "term", ["fa:16:3e:aa:bb:01", "FA:16:3E:AA:BB:01", "fa-16-3e-aa-bb-01", "fa16.3eaa.bb01"]
)
def test_search_ports_by_mac(admin_client, cloud, term):
    response = admin_client.get(url(Port, "changelist"), {"q": term})
    assert [p.name for p in response.context["cl"].result_list] == ["bound"]


def test_search_ports_by_ip_address(admin_client, cloud):
    response = admin_client.get(url(Port, "changelist"), {"q": "10.2.0.77"})
    assert [p.name for p in response.context["cl"].result_list] == ["spare"]
    address = cloud.bound.fixed_ips.get().address
    response = admin_client.get(url(Port, "changelist"), {"q": address})
    assert [p.name for p in response.context["cl"].result_list] == ["bound"]


def test_search_host_agents_by_baremetal_nic_mac(admin_client, cloud):
    response = admin_client.get(url(HostAgent, "changelist"), {"q": "52-54-00-00-00-01"})
    assert [a.host for a in response.context["cl"].result_list] == ["compute-1"]


def test_unbind_action_clears_the_binding(admin_client, cloud):
    bound = cloud.bound
    assert bound.binding_host == "compute-1"
    assert bound.binding_vif_type == VifType.OVS
    response = admin_client.post(
        url(Port, "changelist"), {"action": "unbind", "_selected_action": [bound.pk]}
    )
    assert response.status_code == 302
    bound.refresh_from_db()
    assert bound.binding_host == ""
    assert bound.binding_vif_type == VifType.UNBOUND
    # The addresses stay with the port.
    assert bound.fixed_ips.count() == 1


def test_port_edit_goes_through_the_service(admin_client, cloud):
    spare = cloud.spare
    form = {
        "name": "renamed",
        "description": "",
        "admin_state_up": "on",
        "fixed_ips-TOTAL_FORMS": "1",
        "fixed_ips-INITIAL_FORMS": "1",
    }
    response = admin_client.post(url(Port, "change", spare.pk), form)
    assert response.status_code == 302, response.content
    spare.refresh_from_db()
    assert (spare.name, spare.revision_number) == ("renamed", 1)


def test_port_changelist_has_a_query_budget(admin_client, cloud, django_assert_max_num_queries):
    project, network = cloud.project, cloud.network
    for n in range(28):
        services.port_create(
            project=project,
            network=network,
            name=f"p{n}",
            binding_host="compute-1",
        )
    assert Port.objects.count() == 30
    # Session, user, two counts, the page, its fixed IPs, the network
    # filter's choices: a constant, whatever the number of ports.
    with django_assert_max_num_queries(10):
        response = admin_client.get(url(Port, "changelist"))
    assert len(response.context["cl"].result_list) == 30
