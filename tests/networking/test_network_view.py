"""The network view: per segment, its subnets, how full they are and the
hosts that reach it, through the selector and the admin page."""

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from networking import selectors, services
from networking.models import Network
from tests.factories import ContextFactory, HostAgentFactory, NetworkFactory, vlan_segment

pytestmark = pytest.mark.django_db


@pytest.fixture
def context(db):
    return ContextFactory(user_id="test", project__name="netview")


@pytest.fixture
def routed(context):
    """rack1 (physnet1, VLAN 101, 10.1.0.0/24, one port) and rack2 (physnet2,
    VLAN 102, a pool of four addresses, all used); hosts compute-1 on
    physnet1, compute-2 and compute-3 (down) on physnet2."""
    project = context.project
    network = NetworkFactory(project=project, two_racks=True, rack2_pool=4)
    HostAgentFactory(host="compute-1", physnets=["physnet1"])
    HostAgentFactory(host="compute-2", physnets=["physnet2"])
    an_hour_ago = timezone.now() - timedelta(hours=1)
    HostAgentFactory(host="compute-3", physnets=["physnet2"], now=an_hour_ago)
    services.port_create(project=project, network=network, binding_host="compute-1")
    for _ in range(4):
        services.port_create(project=project, network=network, binding_host="compute-2")
    return network


def view_url(network_id) -> str:
    return reverse("admin:networking_network_view", args=[network_id])


def segment_rows(html: str) -> dict[str, str]:
    """{segment name: the row's HTML}, in page order."""
    rows = re.findall(r'<tr class="segment" data-segment="([^"]+)"[^>]*>(.*?)</tr>', html, re.S)
    return dict(rows)


def test_segment_usage_counts_per_segment_fullest_first(routed):
    usage = selectors.segment_usage(network=routed)
    assert usage.routed and not usage.unplaced
    rows = {row.segment.name: row for row in usage.segments}
    assert [row.segment.name for row in usage.segments] == ["rack2", "rack1"]
    assert (rows["rack1"].availability.used_ips, rows["rack1"].availability.total_ips) == (1, 253)
    assert (rows["rack2"].availability.used_ips, rows["rack2"].availability.total_ips) == (4, 4)
    assert [s.subnet.cidr for s in rows["rack1"].subnets] == ["10.1.0.0/24"]
    assert (rows["rack1"].level, rows["rack2"].level) == ("ok", "danger")
    assert rows["rack2"].bar_width == 100.0
    assert [(h.host, h.alive) for h in rows["rack1"].hosts] == [("compute-1", True)]
    assert [(h.host, h.alive) for h in rows["rack2"].hosts] == [
        ("compute-2", True),
        ("compute-3", False),
    ]


@pytest.mark.parametrize(
    ("used", "total", "level", "width"),
    [
        (0, 10, "ok", 0.0),
        (8, 10, "ok", 80.0),
        (9, 10, "warning", 90.0),
        (10, 10, "danger", 100.0),
        (11, 10, "danger", 100.0),  # addresses outside the pools: the bar stays full
        (1, 3, "ok", 33.3),
        (0, 0, "none", 0.0),  # a segment without addresses
    ],
)
def test_usage_level_turns_warning_above_80_percent_and_danger_when_full(used, total, level, width):
    row = selectors.SegmentUsage(None, [], selectors.Availability(total, used), [])
    assert row.level == level
    assert row.bar_width == width


def test_page_shows_each_segment_with_usage_bar_subnets_and_hosts(admin_client, routed):
    response = admin_client.get(view_url(routed.pk))
    assert response.status_code == 200
    html = response.content.decode()
    rows = segment_rows(html)
    assert list(rows) == ["rack2", "rack1"]  # the full one first
    rack1, rack2 = rows["rack1"], rows["rack2"]
    assert 'data-used="1" data-total="253"' in rack1 and "1 / 253" in rack1
    assert 'data-used="4" data-total="4"' in rack2 and "4 / 4" in rack2
    assert "width: 0.4%" in rack1 and "width: 100.0%" in rack2
    assert "usage-danger" in rack2 and "running dry" in rack2
    assert "usage-ok" in rack1 and "running dry" not in rack1
    assert ">vlan<" in rack1 and ">physnet1<" in rack1 and ">101<" in rack1
    assert "10.1.0.0/24" in rack1 and "10.2.0.0/24" in rack2
    hosts = {
        name: re.findall(r'<li class="([^"]+)" data-host="([^"]+)">', row)
        for name, row in rows.items()
    }
    assert hosts == {
        "rack1": [("alive", "compute-1")],
        "rack2": [("alive", "compute-2"), ("down", "compute-3")],
    }


def test_plain_network_has_one_segment_drawing_on_all_subnets(admin_client, context):
    network = services.network_create(context=context, project=context.project, name="plain")
    services.subnet_create(project=context.project, network=network, cidr="192.168.0.0/29")
    services.port_create(project=context.project, network=network)
    HostAgentFactory(host="tunnel-host", physnets=[])
    HostAgentFactory(host="no-tunnel", physnets=["physnet1"], tunnel_types=[])
    usage = selectors.segment_usage(network=network)
    assert not usage.routed and not usage.unplaced
    [row] = usage.segments
    assert row.segment.network_type == "vxlan"
    assert (row.availability.used_ips, row.availability.total_ips) == (1, 5)
    assert [s.subnet.cidr for s in row.subnets] == ["192.168.0.0/29"]
    assert [h.host for h in row.hosts] == ["tunnel-host"]
    response = admin_client.get(view_url(network.pk))
    [(name, html)] = segment_rows(response.content.decode()).items()
    assert name == str(row.segment.pk)  # unnamed: shown by its id
    assert 'data-used="1" data-total="5"' in html and "tunnel-host" in html


def test_network_without_segments_lists_its_subnets(admin_client, context):
    network = services.network_create(context=context, project=context.project, name="bare")
    services.segment_delete(segment=network.segments.get())
    services.subnet_create(project=context.project, network=network, cidr="192.168.1.0/24")
    usage = selectors.segment_usage(network=network)
    assert usage.segments == []
    assert [s.subnet.cidr for s in usage.unplaced] == ["192.168.1.0/24"]
    response = admin_client.get(view_url(network.pk))
    html = response.content.decode()
    assert response.status_code == 200
    assert segment_rows(html) == {} and "no segments" in html
    assert 'data-subnet="192.168.1.0/24"' in html and "0 / 253" in html


def test_linked_from_the_changelist_and_the_change_page(admin_client, routed):
    target = view_url(routed.pk)
    changelist = admin_client.get(reverse("admin:networking_network_changelist"))
    assert f'href="{target}"' in changelist.content.decode()
    change = admin_client.get(reverse("admin:networking_network_change", args=[routed.pk]))
    assert f'href="{target}"' in change.content.decode()


def test_unknown_network_is_404(admin_client, routed):
    assert admin_client.get(view_url(uuid.uuid4())).status_code == 404


def test_non_staff_cannot_see_it(client, routed):
    assert client.get(view_url(routed.pk)).status_code == 302  # to the login page
    client.force_login(User.objects.create_user("someone", password="x"))
    response = client.get(view_url(routed.pk))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_staff_without_view_permission_is_refused(client, routed):
    client.force_login(User.objects.create_user("staff", password="x", is_staff=True))
    assert client.get(view_url(routed.pk)).status_code == 403


def test_query_count_does_not_grow_with_segments_and_hosts(
    admin_client, context, routed, django_assert_max_num_queries
):
    # Session, user, the network, then the selector: the network with its
    # segments and subnets, the used counts, the addresses leases hold per
    # segment, the hosts on the physical networks, the tunnelling hosts.
    budget = 10
    with django_assert_max_num_queries(budget):
        admin_client.get(view_url(routed.pk))
    project = context.project
    big = services.network_create(
        context=context,
        project=project,
        name="big",
        segments=[vlan_segment(f"physnet{n}", 200 + n, f"rack{n}") for n in range(10)]
        + [{"network_type": "vxlan", "name": "overlay"}],
    )
    for n, segment in enumerate(big.segments.exclude(network_type="vxlan")):
        services.subnet_create(
            project=project, network=big, segment=segment, cidr=f"10.10.{n}.0/24"
        )
        for h in range(3):
            HostAgentFactory(host=f"big-{n}-{h}", physnets=[segment.physical_network])
        services.port_create(project=project, network=big, binding_host=f"big-{n}-0")
    with django_assert_max_num_queries(budget):
        response = admin_client.get(view_url(big.pk))
    assert len(segment_rows(response.content.decode())) == 11
    assert Network.objects.count() == 2
