"""The network view: per segment of a routed network, its IP usage and the
hosts that reach it."""

import pytest

from networking import services
from tests.browser.conftest import expect, screenshot
from tests.factories import HostFactory, NetworkFactory, ProjectFactory, subnets_by_segment

pytestmark = pytest.mark.browser


@pytest.fixture
def routed(transactional_db):
    """Network "routed": rack1 (physnet1, 20 addresses, 3 used, reached by
    node-1 and node-2) and rack2 (physnet2, 5 addresses, all used, reached
    by node-3)."""
    project = ProjectFactory(name="ops")
    network = NetworkFactory(project=project, two_racks=True, rack1_pool=20, rack2_pool=5)
    subnets = subnets_by_segment(network)
    for rack, count in (("rack1", 3), ("rack2", 5)):
        for _ in range(count):
            services.port_create(
                project=project, network=network, fixed_ips=[{"subnet_id": subnets[rack].id}]
            )
    HostFactory(name="node-1", physnets=["physnet1"])
    HostFactory(name="node-2", physnets=["physnet1"])
    HostFactory(name="node-3", physnets=["physnet2"])
    return network


def test_network_view_shows_usage_and_hosts_per_segment(page, routed):
    page.goto(f"/admin/networking/network/{routed.pk}/change/")
    with page.expect_navigation():
        page.click("ul.object-tools a:text('Network view')")
    assert page.url.endswith(f"/admin/networking/network/{routed.pk}/view/")

    rows = page.locator("tr.segment")
    expect(rows).to_have_count(2)
    # Fullest first: the exhausted rack2 leads.
    assert [rows.nth(i).get_attribute("data-segment") for i in range(2)] == ["rack2", "rack1"]

    expected = {"rack1": (3, 20, ["node-1", "node-2"]), "rack2": (5, 5, ["node-3"])}
    for name, (used, total, hosts) in expected.items():
        row = page.locator(f"tr.segment[data-segment='{name}']")
        bar = row.locator(".usage-bar")
        assert (bar.get_attribute("data-used"), bar.get_attribute("data-total")) == (
            str(used),
            str(total),
        )
        expect(row.locator(".usage-text")).to_have_text(f"{used} / {total}")
        expect(row.locator("ul.hosts li")).to_have_text(hosts)

    expect(page.locator("tr.segment[data-segment='rack2'] .badge.exhausted")).to_be_visible()
    expect(page.locator("tr.segment[data-segment='rack1'] .badge")).to_have_count(0)
    # The bar is drawn to scale: rack1 is 3/20 of its track.
    track = page.locator("tr.segment[data-segment='rack1'] .usage-track").bounding_box()
    bar = page.locator("tr.segment[data-segment='rack1'] .usage-bar").bounding_box()
    assert bar["width"] == pytest.approx(track["width"] * 0.15, abs=2)
    screenshot(page, "network-view")
