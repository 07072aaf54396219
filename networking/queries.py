"""The statements networking needs that the ORM cannot say, by name. Each
returns plain data; everything else in networking goes through the ORM."""

import json

from django.db import connection
from django.utils import timezone

from networking.models import IPAllocation, Subnet


def _param(model, field: str, value):
    return model._meta.get_field(field).get_db_prep_save(value, connection)


# The ORM has no INSERT ... ON CONFLICT DO NOTHING that returns the new row's
# id (bulk_create(ignore_conflicts=True) returns none), and a create that
# survives a duplicate needs a savepoint: two round trips more per address.
ADDRESS_INSERT = (
    "INSERT INTO networking_ipallocation (port_id, subnet_id, address, created_at) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (subnet_id, address) DO NOTHING RETURNING id"
)


def address_insert(*, port_id, subnet_id, address: str) -> int | None:
    """The new allocation's id, or None if the subnet has the address already
    (the unique constraint settles a race in the same statement). Stamped
    now, as auto_now_add would."""
    params = [
        _param(IPAllocation, "port", port_id),
        _param(IPAllocation, "subnet", subnet_id),
        _param(IPAllocation, "address", address),
        _param(IPAllocation, "created_at", timezone.now()),
    ]
    with connection.cursor() as cursor:
        cursor.execute(ADDRESS_INSERT, params)
        inserted = cursor.fetchone()
    return inserted[0] if inserted else None


# The ORM locks rows only FOR UPDATE, which would make the allocations in one
# subnet wait for each other; FOR SHARE lets them run side by side and still
# makes a change or delete of the subnet (FOR UPDATE) wait for them. SQLite
# has no row locks: its IMMEDIATE transactions serialise writers.
SUBNET_POOLS = "SELECT allocation_pools FROM networking_subnet WHERE id = %s"


def subnet_pools_shared(*, subnet_id) -> list[dict]:
    """The subnet's allocation pools, its row share-locked until the
    transaction ends."""
    statement = SUBNET_POOLS + (" FOR SHARE" if connection.vendor == "postgresql" else "")
    with connection.cursor() as cursor:
        cursor.execute(statement, [_param(Subnet, "id", subnet_id)])
        (pools,) = cursor.fetchone()
    return json.loads(pools) if isinstance(pools, str) else pools
