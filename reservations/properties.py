"""Blazar's property query language, turned into SQL filters.

A query is a JSON string: ``["==", "$node_type", "compute"]``, combined with
``["and", q1, q2, ...]`` or (berth) ``["or", q1, q2, ...]``. Comparisons are
numeric where both sides are numbers, textual otherwise; a number never
orders against text (``"none"`` is not ``>= 5``).
``hypervisor_properties`` name compute host attributes (vcpus, memory_mb,
local_gb, hypervisor_type, hypervisor_hostname); ``resource_properties`` name
the extra capabilities of reservable hosts. Both become Q objects on
ReservableHost, so candidate search stays one query.
"""

import json

from django.db.models import Exists, OuterRef, Q

from config.errors import Invalid, one_of, shown
from reservations.models import HostProperty

OPERATORS = {"==": "exact", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte", "!=": "exact"}
HYPERVISOR_FIELDS = {
    "vcpus": "host__vcpus",
    "memory_mb": "host__memory_mb",
    "local_gb": "host__disk_gb",
    "hypervisor_type": "host__hypervisor_type",
    "hypervisor_hostname": "host__name",
}
NUMERIC_HYPERVISOR_FIELDS = {"vcpus", "memory_mb", "local_gb"}


def as_number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse(text: str, *, field: str) -> list | None:
    """The query as a list, or None for no filter; Invalid if malformed."""
    if text in (None, "", "[]"):
        return None
    try:
        query = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError:
        raise Invalid(f"Malformed {field}: {shown(text)} is not JSON.") from None
    _check(query, field)
    return query


def _check(query, field: str) -> None:
    if not isinstance(query, list) or not query:
        raise Invalid(f'Malformed {field}: expected a list such as ["==", "$key", "value"].')
    operator = query[0]
    if operator in ("and", "or"):
        if len(query) < 2:
            raise Invalid(f"Malformed {field}: {shown(operator)} needs at least one query.")
        for part in query[1:]:
            _check(part, field)
        return
    if operator not in OPERATORS or len(query) != 3:
        raise Invalid(
            f'Malformed {field}: {shown(query)}; use [op, "$key", value] with op '
            f"{one_of([*OPERATORS, 'and', 'or'])}."
        )
    key = query[1]
    if not isinstance(key, str) or not key.startswith("$") or len(key) < 2:
        raise Invalid(f'Malformed {field}: {shown(key)} must name a property as "$name".')
    if isinstance(query[2], (list, dict)):
        raise Invalid(
            f"Malformed {field}: the value in {shown(query)} must be a string or a number."
        )


def _combine(query, leaf) -> Q:
    operator = query[0]
    if operator in ("and", "or"):
        parts = [_combine(part, leaf) for part in query[1:]]
        combined = parts[0]
        for part in parts[1:]:
            combined = combined & part if operator == "and" else combined | part
        return combined
    return leaf(operator, query[1][1:], query[2])


def _negate_if(operator: str, q: Q) -> Q:
    return ~q if operator == "!=" else q


def resource_filter(query: list | None) -> Q:
    """Reservable hosts whose extra capabilities satisfy the query."""
    if query is None:
        return Q()

    def leaf(operator, key, value):
        lookup = OPERATORS[operator]
        number = as_number(value)
        if number is not None:
            # A number orders only against numbers: "none" is not >= 5.
            match = Q(**{f"number__{lookup}": number})
            if lookup == "exact":
                match |= Q(number__isnull=True, text=str(value))
        else:
            match = Q(**{f"text__{lookup}": str(value)})
        rows = HostProperty.objects.filter(match, reservable=OuterRef("pk"), key=key)
        has_key = HostProperty.objects.filter(reservable=OuterRef("pk"), key=key)
        if operator == "!=":
            return Q(Exists(has_key)) & ~Q(Exists(rows))
        return Q(Exists(rows))

    return _combine(query, leaf)


def hypervisor_filter(query: list | None) -> Q:
    """Reservable hosts whose compute host attributes satisfy the query."""
    if query is None:
        return Q()

    def leaf(operator, key, value):
        if key not in HYPERVISOR_FIELDS:
            raise Invalid(
                f"Unknown hypervisor property {shown(key)}; known: {', '.join(HYPERVISOR_FIELDS)}."
            )
        number = as_number(value)
        if key in NUMERIC_HYPERVISOR_FIELDS:
            if number is None:
                raise Invalid(f"Hypervisor property {shown(key)} is a number, not {shown(value)}.")
            value = number
        else:
            value = str(value)
        return _negate_if(
            operator, Q(**{f"{HYPERVISOR_FIELDS[key]}__{OPERATORS[operator]}": value})
        )

    return _combine(query, leaf)


def property_rows(capabilities: dict) -> list[tuple[str, str, float | None]]:
    """(key, text, number) for each capability, as HostProperty stores them."""
    rows = []
    for key, value in capabilities.items():
        text = value if isinstance(value, str) else json.dumps(value)
        rows.append((str(key), text[:255], as_number(value)))
    return rows


def reservation_filter(reservation) -> Q:
    """Which reservable hosts can serve the reservation."""
    where = resource_filter(parse(reservation.resource_properties, field="resource_properties"))
    if reservation.resource_type == "physical:host":
        where &= hypervisor_filter(
            parse(reservation.hypervisor_properties, field="hypervisor_properties")
        )
    return where
