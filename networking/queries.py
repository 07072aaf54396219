"""The statements networking needs that the ORM cannot say, by name. Each
returns plain data; everything else in networking goes through the ORM."""

import json

from django.db import connection
from django.utils import timezone

from networking.models import AddressHold, IPAllocation, Subnet


def _param(model, field: str, value):
    return model._meta.get_field(field).get_db_prep_save(value, connection)


# The ORM has no INSERT ... ON CONFLICT DO NOTHING that returns the new row's
# id (bulk_create(ignore_conflicts=True) returns none), and a create that
# survives a duplicate needs a savepoint: two round trips more per address.
# The same statement skips an address a lease holds (networking_addresshold)
# from now on; the holder's variant lets through one its holder (of the
# port's project) holds now and no one after it. Given the subnet's pools
# as its caller read them, it also takes the subnet's share lock (see
# SUBNET_POOLS), and inserts only while the pools are still those: the
# first pick needs no read of its own under the lock.
_ADDRESS_INSERT = (
    "INSERT INTO networking_ipallocation (port_id, subnet_id, address, created_at) "
    "SELECT %(port)s, %(subnet)s, %(address)s, %(now)s {subnet}WHERE {pools}NOT EXISTS ("
    "SELECT 1 FROM networking_addresshold h WHERE h.subnet_id = %(subnet)s "
    "AND h.address = %(address)s AND h.end_at > %(now)s{mine}){lock} "
    "ON CONFLICT (subnet_id, address) DO NOTHING RETURNING id"
)
_MINE = " AND (h.holder <> %(holder)s OR h.project_id <> %(project)s OR h.start_at > %(now)s)"


def _address_insert_statement(*, for_holder: bool, while_pools: bool) -> str:
    share = " FOR SHARE OF s" if connection.vendor == "postgresql" else ""
    return _ADDRESS_INSERT.format(
        mine=_MINE if for_holder else "",
        subnet="FROM networking_subnet s " if while_pools else "",
        pools="s.id = %(subnet)s AND s.allocation_pools = %(pools)s AND " if while_pools else "",
        lock=share if while_pools else "",
    )


def address_insert(
    *, port, subnet_id, address: str, holder=None, pools: list[dict] | None = None
) -> int | None:
    """The new allocation's id, or None if the subnet has the address already
    (the unique constraint settles a race in the same statement), a lease
    other than ``holder`` holds it, or (given ``pools``) the subnet's pools
    are no longer ``pools``. Stamped now, as auto_now_add would."""
    now = timezone.now()
    params = {
        "port": _param(IPAllocation, "port", port.pk),
        "subnet": _param(IPAllocation, "subnet", subnet_id),
        "address": _param(IPAllocation, "address", address),
        "now": _param(IPAllocation, "created_at", now),
    }
    if holder is not None:
        params["holder"] = _param(AddressHold, "holder", holder)
        params["project"] = _param(AddressHold, "project", port.project_id)
    if pools is not None:
        params["pools"] = _param(Subnet, "allocation_pools", pools)
    statement = _address_insert_statement(
        for_holder=holder is not None, while_pools=pools is not None
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        inserted = cursor.fetchone()
    return inserted[0] if inserted else None


# The ORM locks rows only FOR UPDATE, which would make the allocations in one
# subnet wait for each other; FOR SHARE lets them run side by side and still
# makes a change or delete of the subnet (FOR UPDATE) wait for them. SQLite
# has no row locks: its IMMEDIATE transactions serialise writers.
SUBNET_POOLS = "SELECT allocation_pools FROM networking_subnet WHERE id = %s"


def subnet_pools_shared(*, subnet_id) -> list[dict] | None:
    """The subnet's allocation pools, its row share-locked until the
    transaction ends; None if the subnet is gone."""
    statement = SUBNET_POOLS + (" FOR SHARE" if connection.vendor == "postgresql" else "")
    with connection.cursor() as cursor:
        cursor.execute(statement, [_param(Subnet, "id", subnet_id)])
        found = cursor.fetchone()
    if found is None:
        return None
    (pools,) = found
    return json.loads(pools) if isinstance(pools, str) else pools
