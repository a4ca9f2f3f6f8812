"""Frozen dataclasses from asyncpg records, built cheaply: a page of 50 rows is the hot
path of every list route.

Two measured costs shape this (50-row account page, 16 columns):
- a frozen dataclass's `__init__` sets each field through `object.__setattr__`: 130 us
  for the page, against 30 us for filling the instance's `__dict__` directly;
- orjson reads a dataclass with `slots=True` field by field (6x slower) but serialises a
  `__dict__` at once, so the store's row types keep their `__dict__` (no `slots=True`).

The instances stay frozen for every caller: only their construction skips `__init__`,
and none of the row types has defaults or a `__post_init__` to skip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")
_new = object.__new__


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def field_names(cls: type) -> tuple[str, ...]:
    """The dataclass's field names, in order (also the column list of its SELECTs)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def build(cls: type[T], values: Sequence[Any]) -> T:
    """`cls(*values)` for a frozen dataclass of the store, without the frozen `__init__`;
    a count of values other than the fields' raises ValueError."""
    names = field_names(cls)
    if len(values) != len(names):  # (zip's strict=True costs more than the whole build)
        raise ValueError(f"{cls.__name__} has {len(names)} fields, not {len(values)}")
    instance = _new(cls)
    instance.__dict__.update(zip(names, values))  # noqa: B905 (lengths checked above)
    return instance


def from_record(cls: type[T], record: Mapping[str, Any]) -> T:
    """`cls` from the record's columns of the same names (other columns are ignored)."""
    return build(cls, [record[name] for name in field_names(cls)])


def from_records(cls: type[T], records: Sequence[Any]) -> list[T]:
    """`cls` for each record. When the SELECT lists exactly the fields in order (checked
    on the first record), values are taken by position, else by name."""
    if not records:
        return []
    if tuple(records[0].keys()) == field_names(cls):
        return [build(cls, record) for record in records]
    return [from_record(cls, record) for record in records]
