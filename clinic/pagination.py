"""Keyset pagination: bounded pages with no COUNT over the table (SPEC §N3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core import signing
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet

_SALT = "vigil.keyset"


@dataclass(frozen=True)
class KeysetPage:
    items: list[Any]
    next_cursor: str | None
    is_first: bool


def _after(fields: tuple[str, ...], values: list[Any]) -> Q:
    """Rows strictly after `values` in (fields...) order; a `-field` sorts descending."""
    names = [f.removeprefix("-") for f in fields]
    condition = Q()
    for i, field in enumerate(fields):
        step = Q(**{f"{f}": v for f, v in zip(names[:i], values[:i], strict=True)})
        step &= Q(**{f"{names[i]}__{'lt' if field.startswith('-') else 'gt'}": values[i]})
        condition |= step
    return condition


def keyset_page(
    queryset: QuerySet, *, fields: tuple[str, ...], cursor: str | None, size: int = 25
) -> KeysetPage:
    """One page of `queryset` ordered by `fields` (the last must be unique, e.g. `id`)."""
    queryset = queryset.order_by(*fields)
    values = None
    if cursor:
        try:
            values = signing.loads(cursor, salt=_SALT)
        except signing.BadSignature:
            values = None  # a tampered or stale cursor restarts at the first page
        if not isinstance(values, list) or len(values) != len(fields):
            values = None
    if values is not None:
        try:
            rows = list(queryset.filter(_after(fields, values))[: size + 1])
        except (ValueError, TypeError, ValidationError):
            values, rows = None, None  # a cursor of another list: start at the first page
    if values is None:
        rows = list(queryset[: size + 1])
    next_cursor = None
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        next_cursor = signing.dumps(
            [_plain(getattr(last, f.removeprefix("-"))) for f in fields], salt=_SALT
        )
    return KeysetPage(items=rows, next_cursor=next_cursor, is_first=values is None)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, str)) or value is None else str(value)
