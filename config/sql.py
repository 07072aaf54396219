"""Hand-written SQL for the build pipeline's steps, with values converted as
the ORM does. Only compute.pipeline still uses it; it goes once the
pipeline's steps are on the ORM.

Django spends about 1 ms of CPU on each query it builds (compiling it,
then making model instances of the rows), several times what PostgreSQL
spends answering it. The build pipeline runs a few dozen statements per
build, so that CPU, not the database, bounded builds per second
(docs/performance.md). Its hottest statements are written out and run
through these helpers. Values go in through each field's
``get_db_prep_save`` and come back through the converters the ORM would
apply, so a row reads and writes as through the ORM, on PostgreSQL and on
SQLite. Saving this way sends no model signals; berth connects none.
"""

from dataclasses import dataclass
from functools import cache

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model
from django.db.transaction import TransactionManagementError


def _db():
    # The connection itself: each attribute read through django.db.connection
    # looks it up again, which the hottest loops here would pay per value.
    return connections[DEFAULT_DB_ALIAS]


def param(model: type[Model], field: str, value):
    """``value`` as the database takes it for ``model.field``."""
    return model._meta.get_field(field).get_db_prep_save(value, _db())


@cache
def columns(model: type[Model], alias: str) -> str:
    """The model's columns, in field order, as ``alias.column, ...``."""
    quote = _db().ops.quote_name
    return ", ".join(f"{alias}.{quote(f.column)}" for f in model._meta.concrete_fields)


def for_update(of: str = "") -> str:
    """A row lock (on table alias ``of`` alone, in a join) where the
    database has them; SQLite has none, and serialises writers. As the
    ORM, it refuses to lock outside a transaction, where the lock would
    end with the statement."""
    db = _db()
    if not db.features.has_select_for_update:
        return ""
    if db.get_autocommit():
        raise TransactionManagementError("A row lock needs a transaction.")
    return f" FOR UPDATE OF {of}" if of else " FOR UPDATE"


def rows(sql: str, params: list | dict) -> list[tuple]:
    with _db().cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def execute(sql: str, params: list | dict) -> int:
    """Run a write; the number of rows it touched."""
    with _db().cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def instances(models: tuple[type[Model], ...], sql: str, params: list) -> list[tuple]:
    """Model instances from rows that select ``columns(model, ...)`` of each
    of ``models`` in turn; a model whose primary key is null in a row (an
    outer join that found nothing) is None there."""
    db = _db()
    readers = [_reader(model, db.vendor) for model in models]
    found = []
    for row in rows(sql, params):
        start, made = 0, []
        for reader in readers:
            values = list(row[start : start + len(reader.names)])
            start += len(reader.names)
            for index, converters, column in reader.conversions:
                for converter in converters:
                    values[index] = converter(values[index], column, db)
            if values[reader.pk_index] is None:
                made.append(None)
            else:
                made.append(reader.model.from_db(db.alias, reader.names, values))
        found.append(tuple(made))
    return found


@dataclass(frozen=True)
class Join:
    """A related row read with the main one, as ``select_related`` does:
    ``path`` names where it goes ("port", or "port__network" through an
    earlier join), ``clause`` joins table ``alias`` of ``model``."""

    path: str
    model: type[Model]
    clause: str
    alias: str


def select(model: type[Model], alias: str, rest: str, params: list, joins=()) -> list[Model]:
    """``SELECT`` the model's rows from its table as ``alias``, then
    ``joins``, then ``rest`` (WHERE, ORDER BY); the joined rows attached
    to each."""
    select_list = ", ".join([columns(model, alias), *(columns(j.model, j.alias) for j in joins)])
    found = instances(
        (model, *(j.model for j in joins)),
        f"SELECT {select_list} FROM {model._meta.db_table} {alias} "
        + " ".join(j.clause for j in joins)
        + f" {rest}",
        params,
    )
    for obj, *related in found:
        for join, row in zip(joins, related, strict=True):
            *through, name = join.path.split("__")
            owner = obj
            for step in through:
                owner = getattr(owner, step)
            if owner is not None:
                setattr(owner, name, row)
    return [obj for obj, *_ in found]


def save(obj: Model, fields: list[str]) -> None:
    """``obj.save(update_fields=fields)`` in one plain UPDATE; fields with
    ``auto_now`` get the current time, as the ORM gives them."""
    model, db = type(obj), _db()
    targets = [model._meta.get_field(name) for name in fields]
    values = [f.get_db_prep_save(f.pre_save(obj, False), db) for f in targets]
    assignments = ", ".join(f"{db.ops.quote_name(f.column)} = %s" for f in targets)
    execute(
        f"UPDATE {model._meta.db_table} SET {assignments} WHERE {model._meta.pk.column} = %s",
        [*values, param(model, model._meta.pk.name, obj.pk)],
    )


@dataclass(frozen=True)
class _Reader:
    """How rows of a model's columns become instances: the attnames in
    column order, where the primary key is, and the converters of the
    columns that have any."""

    model: type[Model]
    names: list[str]
    pk_index: int
    conversions: list[tuple]


@cache
def _reader(model: type[Model], vendor: str) -> _Reader:
    """Once per model and database."""
    del vendor  # part of the cache key: converters differ per database
    db = _db()
    names, conversions = [], []
    for index, field in enumerate(model._meta.concrete_fields):
        column = field.get_col(model._meta.db_table)
        names.append(field.attname)
        converters = db.ops.get_db_converters(column) + column.get_db_converters(db)
        if converters:
            conversions.append((index, converters, column))
    return _Reader(model, names, names.index(model._meta.pk.attname), conversions)
