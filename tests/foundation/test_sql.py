"""Hand-written SQL (config.sql) reads and writes rows as the ORM does, on
PostgreSQL and SQLite, and locks only the rows it says."""

from datetime import UTC, datetime

import psycopg
import pytest
from django.db import transaction
from django.utils import timezone

from compute.models import Flavor, Host, Instance, InstanceStatus, TaskState
from config import sql
from config.models import Project
from tests.conftest import db_url_for_processes

HOST_JOIN = sql.Join("host", Host, "LEFT JOIN compute_host h ON h.id = i.host_id", "h")


def make_instance(**fields) -> Instance:
    project = Project.objects.create(name=f"sql-{Project.objects.count()}")
    flavor = Flavor.objects.get_or_create(id="sql", name="sql", vcpus=1, ram=512, disk=1)[0]
    return Instance.objects.create(
        project=project, name="vm", flavor=flavor, vcpus=1, memory_mb=512, disk_gb=1, **fields
    )


def make_host(name="sql-host") -> Host:
    return Host.objects.create(
        name=name,
        vcpus=8,
        memory_mb=4096,
        disk_gb=100,
        cpu_allocation_ratio=2.5,
        last_heartbeat=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        capabilities={"node_type": "gpu", "slots": [1, 2]},
    )


def by_id(instance_id, joins=()) -> list[Instance]:
    return sql.select(
        Instance, "i", "WHERE i.id = %s", [sql.param(Instance, "id", instance_id)], joins
    )


def fields_of(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields}


@pytest.mark.django_db
def test_a_row_reads_as_the_orm_reads_it_with_its_joined_row():
    host = make_host()
    instance = make_instance(
        host=host,
        claimed_host=host,
        excluded_hosts=["h1", "h2"],
        fault={"code": 500, "message": "späť"},
        step_deadline=timezone.now(),
        task_state=TaskState.BINDING,
    )
    (found,) = by_id(instance.pk, [HOST_JOIN])
    assert fields_of(found) == fields_of(Instance.objects.get(pk=instance.pk))
    assert found._state.adding is False
    # The joined host is attached, whole (generated columns included).
    assert fields_of(found.host) == fields_of(Host.objects.get(pk=host.pk))
    assert found.host.free_vcpus == 20.0


@pytest.mark.django_db
def test_an_outer_join_that_finds_nothing_attaches_none_and_costs_no_query(
    django_assert_num_queries,
):
    instance = make_instance()
    with django_assert_num_queries(1):
        (found,) = by_id(instance.pk, [HOST_JOIN])
        assert found.host is None
    assert by_id(make_host().pk) == []  # no such instance


@pytest.mark.django_db
def test_save_writes_the_named_fields_and_stamps_auto_now():
    instance = make_instance(task_state=TaskState.SCHEDULING)
    before = Instance.objects.get(pk=instance.pk).updated_at
    instance.task_state = None
    instance.status = InstanceStatus.ERROR
    instance.fault = {"code": 500, "message": "no host"}
    instance.alternate_hosts = ["h3"]
    instance.name = "not saved"
    sql.save(instance, ["task_state", "status", "fault", "alternate_hosts", "updated_at"])
    stored = Instance.objects.get(pk=instance.pk)
    assert stored.task_state is None
    assert stored.status == InstanceStatus.ERROR
    assert stored.fault == {"code": 500, "message": "no host"}
    assert stored.alternate_hosts == ["h3"]
    assert stored.name == "vm"
    assert stored.updated_at > before
    assert stored.updated_at == instance.updated_at


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_lock_holds_the_main_row_alone():
    host = make_host()
    instance = make_instance(host=host)
    with transaction.atomic():
        sql.instances(
            (Instance, Host),
            f"SELECT {sql.columns(Instance, 'i')}, {sql.columns(Host, 'h')} "
            f"FROM compute_instance i {HOST_JOIN.clause} WHERE i.id = %s" + sql.for_update(of="i"),
            [sql.param(Instance, "id", instance.pk)],
        )
        with psycopg.connect(db_url_for_processes(), autocommit=True) as other:
            other.execute("SELECT 1 FROM compute_host WHERE id = %s FOR UPDATE NOWAIT", [host.pk])
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(
                    "SELECT 1 FROM compute_instance WHERE id = %s FOR UPDATE NOWAIT",
                    [instance.pk],
                )
