"""The build history page: an instance's actions, their steps per attempt
and where each ran, from the action log the pipeline writes."""

import re
import uuid

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from compute import pipeline, selectors, services
from compute.models import InstanceAction
from compute.services import NicRequest
from config.request_id import request_id_var
from tests.compute.conftest import run_pipeline
from tests.factories import HostFactory

REQUEST = "req-00000000-0000-4000-8000-000000000001"


def boot(cloud, name="vm"):
    token = request_id_var.set(REQUEST)
    try:
        [instance] = services.server_create(
            context=cloud.context,
            name=name,
            flavor=cloud.flavors["small"],
            nics=[NicRequest(network=cloud.network)],
        )
    finally:
        request_id_var.reset(token)
    return run_pipeline(instance)


def spawn_fails_on(*names: str):
    for name in names:
        physnet = "physnet1" if name == "h1" else "physnet2"
        HostFactory(name=name, physnets=[physnet], driver_options={"spawn_error": "disk on fire"})


@pytest.fixture
def rescued(cloud):
    """Spawn fails on h2, the first pick (h1 has the least free RAM): the
    second attempt lands on h3."""
    HostFactory(name="h1", physnets=["physnet1"], memory_mb=2048)
    spawn_fails_on("h2")
    instance = boot(cloud)
    assert (instance.status, instance.host.name, instance.attempt) == ("ACTIVE", "h3", 2)
    return instance


@pytest.fixture
def failed(cloud):
    """Spawn fails everywhere: ERROR after three attempts, then deleted."""
    spawn_fails_on("h1", "h2", "h3")
    instance = boot(cloud, name="doomed")
    assert instance.status == "ERROR"
    return instance


def history_url(instance_id) -> str:
    return reverse("admin:compute_instance_build_history", args=[instance_id])


def sections(html: str, kind: str) -> list[tuple[str, str]]:
    """[(data-<kind> value, the section's HTML)] of the innermost sections."""
    pattern = rf'<section class="{kind}" data-{kind}="([^"]+)"[^>]*>(.*?)</section>'
    return re.findall(pattern, html, re.S)


def steps(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<div class="step" data-step="([^"]+)" data-result="([^"]*)">', html)


def test_selector_groups_steps_by_attempt_with_host_and_duration(rescued):
    [create] = selectors.build_history(instance=rescued)
    assert create.action.action == "create" and create.action.request_id == REQUEST
    assert [a.number for a in create.attempts] == [1, 2]
    first, second = create.attempts
    assert (first.host, first.result, second.host, second.result) == (
        "h2",
        "Error",
        "h3",
        "Success",
    )
    assert [(s.event.event, s.event.result) for s in first.steps] == [
        ("compute_prepare_ports", "Success"),
        ("compute_schedule_instance", "Success"),
        ("compute_bind_ports", "Success"),
        ("compute_spawn", "Error"),
    ]
    assert "spawn failed on h2: disk on fire" in first.steps[-1].event.details
    assert [s.event.event for s in second.steps] == [
        "compute_schedule_instance",
        "compute_bind_ports",
        "compute_spawn",
    ]
    assert all(s.event.host == "h3" for s in second.steps)
    assert all(s.duration_ms is not None and s.duration_ms >= 0 for s in create.steps)
    # The timeline: bars inside the track, each at least visible.
    assert all(0 <= s.offset <= 100 and 0 < s.width <= 100 for s in create.steps)


def test_page_shows_attempts_hosts_and_results(admin_client, rescued):
    response = admin_client.get(history_url(rescued.pk))
    assert response.status_code == 200
    html = response.content.decode()
    attempts = dict(sections(html, "attempt"))
    assert list(attempts) == ["1", "2"]
    assert steps(attempts["1"]) == [
        ("compute_prepare_ports", "Success"),
        ("compute_schedule_instance", "Success"),
        ("compute_bind_ports", "Success"),
        ("compute_spawn", "Error"),
    ]
    assert steps(attempts["2"])[-1] == ("compute_spawn", "Success")
    assert "h2" in attempts["1"] and "spawn failed on h2: disk on fire" in attempts["1"]
    assert "h3" in attempts["2"] and "h2" not in attempts["2"]
    assert re.search(r'class="step-duration">\d+ ms<', html)
    assert html.count('class="timeline-bar') == 7
    assert f'data-request-id="{REQUEST}"' in html and "by u1" in html


def test_failed_build_shows_the_fault_and_every_action(admin_client, cloud, failed):
    services.server_delete(context=cloud.context, instance=failed)
    pipeline.delete(failed.pk)
    response = admin_client.get(history_url(failed.pk))
    html = response.content.decode()
    summary = html.split('<section class="action"')[0]
    assert "DELETED" in summary
    assert failed.fault["message"] in summary and failed.fault["details"] in summary
    assert "step: spawn" in failed.fault["details"]
    actions = re.findall(r'<section class="action" data-action="(\w+)"', html)
    assert actions == ["create", "delete"]
    results = [r for _, r in steps(html)]
    assert results.count("Error") == 3 and ("compute_terminate_instance", "Success") in steps(html)
    spawned_on = re.findall(r"spawn failed on (h\d): disk on fire", html)
    assert sorted(set(spawned_on)) == ["h1", "h2", "h3"]


def test_linked_from_the_changelist_and_the_change_page(admin_client, rescued):
    target = history_url(rescued.pk)
    changelist = admin_client.get(reverse("admin:compute_instance_changelist"))
    assert f'href="{target}"' in changelist.content.decode()
    change = admin_client.get(reverse("admin:compute_instance_change", args=[rescued.pk]))
    assert f'href="{target}"' in change.content.decode()
    assert "Build history" in change.content.decode()
    # The admin's own change log stays reachable.
    log = admin_client.get(reverse("admin:compute_instance_log", args=[rescued.pk]))
    assert log.status_code == 200


def test_unknown_instance_is_404(admin_client, db):
    assert admin_client.get(history_url(uuid.uuid4())).status_code == 404


def test_non_staff_cannot_see_it(client, rescued):
    assert client.get(history_url(rescued.pk)).status_code == 302  # to the login page
    client.force_login(User.objects.create_user("someone", password="x"))
    response = client.get(history_url(rescued.pk))
    assert response.status_code == 302 and "/login/" in response["Location"]
    client.force_login(User.objects.create_user("staff", password="x", is_staff=True))
    assert client.get(history_url(rescued.pk)).status_code == 403


def test_query_count_does_not_grow_with_events(
    admin_client, cloud, rescued, django_assert_max_num_queries
):
    # Session, user, the instance, its host, the actions, their events.
    budget = 6
    with django_assert_max_num_queries(budget):
        admin_client.get(history_url(rescued.pk))
    spawn_fails_on("h1", "h3")
    busy = boot(cloud, name="busy")
    services.server_delete(context=cloud.context, instance=busy)
    pipeline.delete(busy.pk)
    assert busy.actions.count() == 2 and busy.attempt == 3
    with django_assert_max_num_queries(budget):
        response = admin_client.get(history_url(busy.pk))
    assert len(steps(response.content.decode())) > len(steps_of(rescued))


def steps_of(instance) -> list:
    return [e for a in InstanceAction.objects.filter(instance=instance) for e in a.events.all()]
