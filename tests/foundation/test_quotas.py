"""Quotas: limits, usage counted from the database, enforced under a lock."""

import subprocess
import sys

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from identity.models import Project
from identity.quotas import quota_enforce, quota_limits, quota_set, quota_usage
from networking.models import Network
from tests.conftest import ROOT, process_env
from tests.factories import NetworkFactory, ProjectFactory


def test_limits_default_and_override(db, settings):
    project = ProjectFactory()
    assert quota_limits(project=project)["network"] == settings.BERTH_QUOTA_DEFAULTS["network"]
    quota_set(project=project, resource="network", limit=3)
    assert quota_limits(project=project)["network"] == 3


def test_usage_is_counted_from_the_database(db):
    project = ProjectFactory()
    NetworkFactory.create_batch(2, project=project)
    NetworkFactory()  # another project's
    assert quota_usage(project=project)["network"] == 2


def test_unlimited(caller, settings):
    # A default of 1: the third network is created only because -1 holds.
    settings.BERTH_QUOTA_DEFAULTS = {**settings.BERTH_QUOTA_DEFAULTS, "network": 1}
    alice = caller("alpha", "member")
    quota_set(project=alice.project, resource="network", limit=-1)
    for _ in range(3):
        assert alice.post("/networking/v2.0/networks", {"network": {}}).status_code == 201
    bob = caller("beta", "member")
    assert bob.post("/networking/v2.0/networks", {"network": {}}).status_code == 201
    assert bob.post("/networking/v2.0/networks", {"network": {}}).status_code == 409


def project_locks(queries) -> list[str]:
    # FOR NO KEY UPDATE: rows that reference the project do not wait for it.
    return [
        q["sql"]
        for q in queries
        if "identity_project" in q["sql"] and "FOR NO KEY UPDATE" in q["sql"]
    ]


@pytest.mark.postgres
def test_enforce_locks_the_project_only_when_a_limit_applies(db):
    project = ProjectFactory()
    quota_set(project=project, resource="network", limit=-1)
    with CaptureQueriesContext(connection) as unlimited, transaction.atomic():
        quota_enforce(project=project, requested={"network": 1})
    quota_set(project=project, resource="network", limit=1)
    with CaptureQueriesContext(connection) as limited, transaction.atomic():
        quota_enforce(project=project, requested={"network": 1})
    # Without a limit nothing is counted, so consumers need not queue.
    assert project_locks(unlimited.captured_queries) == []
    assert len(project_locks(limited.captured_queries)) == 1


CREATE_ONE = """
import django; django.setup()
from identity.auth import RequestContext
from config.errors import OverQuota
from identity.models import Project
from networking.services import network_create
project = Project.objects.get(name="contended")
context = RequestContext(user_id="u", project=project, role="member")
try:
    network_create(context=context, project=project, name="n")
    print("created")
except OverQuota:
    print("over quota")
"""


@pytest.mark.postgres
def test_concurrent_creators_never_exceed_the_quota(transactional_db):
    project = Project.objects.create(name="contended")
    quota_set(project=project, resource="network", limit=3)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE_ONE],
            cwd=ROOT,
            env=process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    outcomes = [p.communicate(timeout=60) for p in procs]
    results = sorted(out.strip() for out, _ in outcomes)
    assert results == ["created"] * 3 + ["over quota"] * 5, outcomes
    assert Network.objects.filter(project=project).count() == 3
