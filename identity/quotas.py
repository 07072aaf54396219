"""Per-project quotas, shared by every app.

Limits come from BERTH_QUOTA_DEFAULTS, overridden per project by Quota rows.
Usage is always counted from the database (never a cached counter that can
drift): each app registers a counter per resource in its AppConfig.ready().
A few limits bound one request instead and count nothing (a lease's
duration and how far ahead it starts); their owners read quota_limits.

``quota_check`` is the early, lock-free check at the API. ``quota_enforce``
is the authoritative one, called inside the transaction that consumes the
resource: it locks the project row so two concurrent consumers in one
project are counted one after the other.
"""

from collections.abc import Callable

from django.conf import settings
from django.db import transaction

from config.errors import OverQuota
from identity.models import Project, Quota

UsageCounter = Callable[[Project], int]
_counters: dict[str, UsageCounter] = {}


def register_usage(resource: str, counter: UsageCounter) -> None:
    _counters[resource] = counter


def quota_limits(*, project: Project) -> dict[str, int]:
    limits = dict(settings.BERTH_QUOTA_DEFAULTS)
    limits.update(Quota.objects.filter(project_id=project.pk).values_list("resource", "limit"))
    return limits


def quota_usage(*, project: Project) -> dict[str, int]:
    return {resource: counter(project) for resource, counter in _counters.items()}


def quota_check(
    *, project: Project, requested: dict[str, int], limits: dict[str, int] | None = None
) -> None:
    limits = quota_limits(project=project) if limits is None else limits
    for resource, amount in requested.items():
        limit = limits.get(resource, -1)
        if limit < 0 or amount <= 0:
            continue
        used = _counters[resource](project)
        if used + amount > limit:
            raise OverQuota(
                f"Quota exceeded for {resource}: requested {amount}, "
                f"but already used {used} of {limit} {resource}."
            )


def quota_enforce(*, project: Project, requested: dict[str, int]) -> None:
    """quota_check under the project's row lock. Call it inside the
    transaction that consumes the resource: the lock is held until that
    commits (SQLite's IMMEDIATE transactions serialize writers anyway).

    Nothing is counted for unlimited resources, so then no lock is taken:
    consumers in a project without limits run side by side."""
    limits = quota_limits(project=project)
    if all(limits.get(resource, -1) < 0 or amount <= 0 for resource, amount in requested.items()):
        return
    with transaction.atomic(savepoint=False):
        # FOR NO KEY UPDATE: consumers of the quota wait for each other, but
        # rows that only reference the project (a notification, a lease
        # another transaction writes while it holds other locks) do not
        # wait for it, which would close a lock cycle with them.
        rows = Project.objects.select_for_update(no_key=True).filter(pk=project.pk)
        list(rows.values_list("pk"))
        quota_check(project=project, requested=requested, limits=limits)


def quota_set(*, project: Project, resource: str, limit: int) -> Quota:
    quota, _ = Quota.objects.update_or_create(
        project=project, resource=resource, defaults={"limit": limit}
    )
    return quota


def quota_clear(*, project: Project, resource: str) -> None:
    """The project's override of ``resource`` removed: the default applies."""
    Quota.objects.filter(project=project, resource=resource).delete()


def quota_fit(
    *, project: Project, per_unit: dict[str, int], wanted_min: int, wanted_max: int
) -> int:
    """How many units (e.g. instances of one flavor) fit the project's
    quotas, between ``wanted_min`` and ``wanted_max``: as many as possible,
    all or nothing at ``wanted_min`` (Nova's multi-create). Takes the
    project's row lock (as quota_enforce); call inside the consuming
    transaction."""
    with transaction.atomic(savepoint=False):
        rows = Project.objects.select_for_update(no_key=True).filter(pk=project.pk)
        list(rows.values_list("pk"))
        limits = quota_limits(project=project)
        fits, short = wanted_max, None
        for resource, each in per_unit.items():
            limit = limits.get(resource, -1)
            if limit < 0 or each <= 0:
                continue
            used = _counters[resource](project)
            room = max(0, (limit - used) // each)
            if room < fits:
                fits, short = room, (resource, used, limit, each)
        if fits < wanted_min:
            resource, used, limit, each = short
            raise OverQuota(
                f"Quota exceeded for {resource}: requested {each * wanted_min}, "
                f"but already used {used} of {limit} {resource}."
            )
        return fits
