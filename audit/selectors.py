"""Reads for the audit viewer (SPEC §C6): scoped to the administrator's sites, with field-level
diffs worked out per page in a bounded number of queries (two per kind of record shown)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.apps import apps
from django.db import models
from django.db.models import CharField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Cast
from django.http import Http404
from django.utils import timezone
from simple_history.models import HistoricalChanges

from audit.models import AccessLog, AuditEvent
from audit.scope import SCOPES, scope_of
from clinic.models import User

STAFF = "clinic.user"
_RECORD_ID = re.compile(r"[0-9]{1,18}")

# Rows of these models are part of their parent record's trail (a session and its readings).
CHILDREN: dict[str, tuple[str, ...]] = {
    "monitoring.treatmentsession": (
        "doses",
        "vitals",
        "alerts",
        "checks",
        "observations",
        "discharge",
    ),
}

# What the record trail of each model may be opened for: every model the audit scopes.
RECORD_TYPES = tuple(label for label in SCOPES if not label.endswith(("signature", "failure")))


def record_type_choices() -> list[tuple[str, str]]:
    return sorted(
        ((label, apps.get_model(label)._meta.verbose_name.capitalize()) for label in RECORD_TYPES),
        key=lambda choice: choice[1],
    )


def events_for_user(*, user: User) -> QuerySet[AuditEvent]:
    """Every event an administrator may read: their sites', the clinic-wide ones (protocols,
    consent templates), and those about staff accounts of their sites (changes, sign-ins)."""
    their_staff = (
        User.objects.filter(sites__in=user.site_ids)
        .annotate(key=Cast("pk", CharField()))
        .values("key")
    )
    return AuditEvent.objects.filter(
        Q(site_id__in=user.site_ids)
        | (Q(site__isnull=True) & ~Q(object_type=STAFF))
        | Q(site__isnull=True, object_type=STAFF, object_id__in=their_staff)
    ).select_related("user", "site", "chain")


@dataclass(frozen=True)
class EventFilter:
    site_id: int | None = None
    start: date | None = None
    end: date | None = None
    user_id: int | None = None
    object_type: str = ""
    action: str = ""


def filter_events(events: QuerySet[AuditEvent], f: EventFilter, tz) -> QuerySet[AuditEvent]:
    if f.site_id:
        events = events.filter(site_id=f.site_id)
    if f.start:
        events = events.filter(occurred_at__gte=datetime.combine(f.start, time.min, tz))
    if f.end:
        events = events.filter(
            occurred_at__lt=datetime.combine(f.end + timedelta(days=1), time.min, tz)
        )
    if f.user_id:
        events = events.filter(user_id=f.user_id)
    if f.object_type:
        events = events.filter(object_type=f.object_type)
    if f.action:
        events = events.filter(action=f.action)
    return events


def record_for_user(*, user: User, object_type: str, object_id: str) -> models.Model:
    """The record whose trail is asked for; 404 outside the administrator's sites."""
    if object_type not in RECORD_TYPES or not _RECORD_ID.fullmatch(object_id):
        raise Http404
    record = apps.get_model(object_type)._base_manager.filter(pk=object_id).first()
    if record is None:
        raise Http404
    site_id, _patient_id = scope_of(record)
    if site_id is not None and site_id not in user.site_ids:
        raise Http404
    if isinstance(record, User) and not record.sites.filter(pk__in=user.site_ids).exists():
        raise Http404  # staff of other sites only
    return record


def record_events(*, user: User, record: models.Model) -> QuerySet[AuditEvent]:
    """The record's own events and those of its child rows, oldest first."""
    label = record._meta.label_lower
    condition = Q(object_type=label, object_id=str(record.pk))
    for name in CHILDREN.get(label, ()):
        relation = record._meta.get_field(name)
        child_ids = relation.related_model._base_manager.filter(
            **{relation.field.name: record}
        ).values_list("pk", flat=True)
        condition |= Q(
            object_type=relation.related_model._meta.label_lower,
            object_id__in=[str(pk) for pk in child_ids],
        )
    return events_for_user(user=user).filter(condition)


def staff_choices(*, user: User) -> QuerySet[User]:
    """Staff whose activity an administrator may read: members of their sites."""
    return User.objects.filter(sites__in=user.site_ids).distinct().order_by("username")


def staff_member_for_user(*, user: User, pk: int) -> User:
    member = staff_choices(user=user).filter(pk=pk).first()
    if member is None:
        raise Http404
    return member


# --- field-level diffs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    field: str
    old: str
    new: str


@dataclass
class EventRow:
    event: AuditEvent
    changes: list[Change] = field(default_factory=list)
    access: AccessLog | None = None
    label: str = ""


def _display(history_row, model_field: models.Field) -> str:
    value = getattr(history_row, model_field.attname)
    if value is None or value == "":
        return "—"
    if model_field.choices:
        return str(dict(model_field.flatchoices).get(value, value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
    if isinstance(model_field, models.ForeignKey):
        # Staff are named once per page (see `_name_staff`); other records by their id.
        return f"{STAFF_PREFIX}{value}" if model_field.related_model is User else f"#{value}"
    if isinstance(value, (dict, list)):
        return "(structured data changed)" if value else "—"
    text = str(value)
    return text if len(text) <= 200 else text[:199] + "…"


STAFF_PREFIX = "\x00staff:"


def _name_staff(rows: list[EventRow]) -> None:
    """Replace staff ids in old → new values by names: one query for the page."""
    ids = {
        int(value.removeprefix(STAFF_PREFIX))
        for row in rows
        for change in row.changes
        for value in (change.old, change.new)
        if value.startswith(STAFF_PREFIX)
    }
    if not ids:
        return
    names = {u.pk: u.printed_name for u in User.objects.filter(pk__in=ids)}

    def named(value: str) -> str:
        if not value.startswith(STAFF_PREFIX):
            return value
        pk = int(value.removeprefix(STAFF_PREFIX))
        return names.get(pk, f"user #{pk}")

    for row in rows:
        row.changes = [Change(c.field, named(c.old), named(c.new)) for c in row.changes]


def _changes(row, previous) -> list[Change]:
    model = row.instance_type
    changes = []
    for tracked in row.tracked_fields:
        if tracked.primary_key:
            continue
        try:
            model_field = model._meta.get_field(tracked.name)
        except LookupError:
            model_field = tracked
        new = _display(row, model_field)
        old = _display(previous, model_field) if previous is not None else ""
        if previous is None:
            if new != "—":
                changes.append(Change(str(model_field.verbose_name), "", new))
        elif getattr(row, model_field.attname) != getattr(previous, model_field.attname):
            changes.append(Change(str(model_field.verbose_name), old, new))
    return changes


def _history_model(label: str):
    try:
        model = apps.get_model(label)
    except LookupError:
        return None
    return model if issubclass(model, HistoricalChanges) else None


def _m2m_changes(row) -> list[Change]:
    """A membership row (User.sites as of a change): the related record it names."""
    return [
        Change(str(f.verbose_name), "", f"#{getattr(row, f.attname)}")
        for f in row._meta.concrete_fields
        if f.is_relation
        and f.name != "history"
        and f.related_model is not row.history.instance_type
    ]


def describe(events: Iterable[AuditEvent]) -> list[EventRow]:
    """Rows for the viewer: each history event with its old → new values, each access event
    with what was seen. Two queries per kind of history row on the page, one for access rows."""
    events = list(events)
    rows = [EventRow(e, label=_record_label(e)) for e in events]
    by_source: dict[str, list[EventRow]] = defaultdict(list)
    for row in rows:
        by_source[row.event.source].append(row)
    for source, group in by_source.items():
        if source == "audit.accesslog":
            logs = AccessLog.objects.in_bulk([r.event.source_id for r in group])
            for row in group:
                row.access = logs.get(row.event.source_id)
            continue
        history = _history_model(source)
        if history is None:
            continue
        if not hasattr(history, "tracked_fields"):
            memberships = history.objects.select_related("history").in_bulk(
                [r.event.source_id for r in group]
            )
            for row in group:
                if row.event.source_id in memberships:
                    row.changes = _m2m_changes(memberships[row.event.source_id])
            continue
        pk_name = history._meta.pk.attname
        previous_id = (
            history.objects.filter(id=OuterRef("id"), **{f"{pk_name}__lt": OuterRef(pk_name)})
            .order_by(f"-{pk_name}")
            .values(pk_name)[:1]
        )
        current = {
            getattr(h, pk_name): h
            for h in history.objects.filter(
                **{f"{pk_name}__in": [r.event.source_id for r in group]}
            ).annotate(previous_id=Subquery(previous_id))
        }
        previous = history.objects.in_bulk(
            [h.previous_id for h in current.values() if h.previous_id], field_name=pk_name
        )
        for row in group:
            h = current.get(row.event.source_id)
            if h is not None:
                row.changes = _changes(h, previous.get(h.previous_id))
    _name_staff(rows)
    return rows


def _record_label(event: AuditEvent) -> str:
    if not event.object_type:
        return ""
    try:
        name = apps.get_model(event.object_type)._meta.verbose_name
    except LookupError:
        name = event.object_type
    return f"{str(name).capitalize()} #{event.object_id}" if event.object_id else str(name)
