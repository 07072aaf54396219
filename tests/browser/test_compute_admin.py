"""Hosts and servers in the admin: an action run from the changelist's
dropdown, the server list."""

import re

import pytest

from compute import services
from compute.models import Flavor, Host
from tests.browser.conftest import expect, screenshot
from tests.compute.conftest import run_pipeline
from tests.factories import ContextFactory, FlavorFactory, HostFactory, NetworkFactory

pytestmark = pytest.mark.browser


@pytest.fixture
def hosts(transactional_db):
    return {name: HostFactory(name=name) for name in ("node-a", "node-b", "node-c")}


def test_login_lands_on_the_admin_index(page):
    expect(page.locator("#user-tools")).to_contain_text("operator")
    expect(page.locator("#content")).to_contain_text("Compute")


def test_disable_action_from_the_host_changelist(page, hosts):
    page.goto("/admin/compute/host/")
    row = page.locator("#result_list tbody tr", has_text="node-b")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "disable_hosts")
    with page.expect_navigation():
        page.click("button[name=index]")

    host = Host.objects.get(name="node-b")
    assert not host.enabled
    assert host.disabled_reason == "disabled by operator"
    # Only the selected row changed.
    enabled = Host.objects.filter(enabled=True).values_list("name", flat=True)
    assert set(enabled) == {"node-a", "node-c"}
    # The list shows it too: the "enabled" column of node-b is now a "no" icon.
    row = page.locator("#result_list tbody tr", has_text="node-b")
    expect(row.locator("td.field-enabled img")).to_have_attribute("alt", "False")

    # The action says what it did, as the admin's own delete action does.
    success = page.locator("ul.messagelist li.success")
    expect(success).to_contain_text(re.compile("disabled", re.IGNORECASE))


@pytest.fixture
def shop(transactional_db, no_worker):
    context = ContextFactory(user_id="u1", project__name="shop")
    FlavorFactory(name="small")
    return context


def boot(context, name):
    """A server on a new flat network, its build steps run in this process."""
    network = NetworkFactory(context=context, project=context.project, name="flat", vlan=True)
    instance = services.server_create(
        context=context,
        name=name,
        flavor=Flavor.objects.get(name="small"),
        nics=[services.NicRequest(network=network)],
    )[0]
    return run_pipeline(instance)


@pytest.fixture
def server(hosts, shop):
    return boot(shop, "web-1")


def test_server_changelist_shows_status_and_host(page, server):
    assert server.status == "ACTIVE"
    page.goto("/admin/compute/instance/")
    row = page.locator("#result_list tbody tr", has_text="web-1")
    expect(row.locator("td.field-state")).to_have_text("Active")
    expect(row.locator("td.field-host")).to_have_text(server.host.name)
    expect(row.locator("td.field-project")).to_have_text("shop")


@pytest.fixture
def retried(shop):
    """Server "db-1": its first attempt failed to spawn on "bad-host" (the
    fake driver fails there), its second landed on "good-host"."""
    # The most free RAM makes bad-host the scheduler's first choice.
    HostFactory(name="bad-host", memory_mb=65536, driver_options={"spawn_error": "disk on fire"})
    HostFactory(name="good-host")
    instance = boot(shop, "db-1")
    assert (instance.status, instance.host.name) == ("ACTIVE", "good-host")
    assert instance.excluded_hosts == ["bad-host"]
    return instance


def test_build_history_shows_the_failed_attempt(page, retried):
    page.goto(f"/admin/compute/instance/{retried.pk}/change/")
    with page.expect_navigation():
        page.click("ul.object-tools a:text('Build history')")
    assert page.url.endswith(f"/admin/compute/instance/{retried.pk}/history/")

    first = page.locator("section.attempt[data-attempt='1']")
    failed = first.locator("div.step[data-result='Error']")
    expect(failed).to_have_count(1)
    expect(failed).to_have_attribute("data-step", "compute_spawn")
    expect(failed.locator(".step-host")).to_have_text("bad-host")
    expect(failed.locator(".details")).to_contain_text("disk on fire")

    second = page.locator("section.attempt[data-attempt='2']")
    expect(second.locator("div.step[data-result='Error']")).to_have_count(0)
    expect(second.locator("div.step[data-step='compute_spawn']")).to_have_attribute(
        "data-result", "Success"
    )
    expect(second.locator("div.step[data-step='compute_spawn'] .step-host")).to_have_text(
        "good-host"
    )
    expect(page.locator("td.host")).to_have_text("good-host")
    expect(page.locator(".build-history")).to_contain_text("disk on fire")
    screenshot(page, "build-history")
