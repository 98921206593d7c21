"""Reads for Step 3: role worklists (SPEC §F3) and the patient's follow-ups and trend."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from clinic.models import Role, User
from followups.models import FollowUp
from patients.models import ConsentRecord

UPCOMING_DAYS = 14
CONSENT_EXPIRY_NOTICE_DAYS = 30  # SPEC §P5


def _mine(user: User, site_id: int | None) -> Q:
    roles = [r for r in user.role_names]
    mine = Q(site_id__in=user.site_ids, state=FollowUp.State.OPEN) & (
        Q(assigned_to=user) | Q(assigned_to__isnull=True, assigned_role__in=roles)
    )
    if site_id is not None:
        mine &= Q(site_id=site_id)
    return mine


def _end_of_local_day(now: datetime) -> datetime:
    local = timezone.localtime(now)
    return local.replace(hour=23, minute=59, second=59, microsecond=999999)


def worklist_counts(*, user: User, site_id: int | None = None, now: datetime | None = None) -> int:
    """Due today plus overdue: the number in the navigation. One bounded COUNT."""
    now = now or timezone.now()
    return FollowUp.objects.filter(_mine(user, site_id), due_at__lte=_end_of_local_day(now)).count()


@dataclass
class Worklist:
    overdue: list[FollowUp] = field(default_factory=list)
    due_today: list[FollowUp] = field(default_factory=list)
    upcoming: list[FollowUp] = field(default_factory=list)
    expiring_consents: list[ConsentRecord] = field(default_factory=list)
    # The psychiatrist's: GAD-7 results flagged for further evaluation (SPEC §F2).
    gad7_flags: list[FollowUp] = field(default_factory=list)


def worklist_for_user(
    *, user: User, site_id: int | None = None, now: datetime | None = None, limit: int = 100
) -> Worklist:
    now = now or timezone.now()
    end_today = _end_of_local_day(now)
    rows = (
        FollowUp.objects.filter(
            _mine(user, site_id), due_at__lte=now + timedelta(days=UPCOMING_DAYS)
        )
        .select_related("patient", "course__protocol_version__protocol", "assigned_to")
        .order_by("due_at", "id")[: limit * 3]
    )
    worklist = Worklist()
    for row in rows:
        if row.window_ends_at < now:
            worklist.overdue.append(row)
        elif row.due_at <= end_today:
            worklist.due_today.append(row)
        else:
            worklist.upcoming.append(row)
    if user.has_role(Role.NURSE):
        worklist.expiring_consents = list(
            expiring_consents(user=user, site_id=site_id, now=now)[:limit]
        )
    if user.has_role(Role.PSYCHIATRIST):
        worklist.gad7_flags = list(gad7_flags_for_psychiatrist(user=user, site_id=site_id)[:limit])
    return worklist


def gad7_flags_for_psychiatrist(*, user: User, site_id: int | None = None) -> QuerySet[FollowUp]:
    """GAD-7 >= 10 at a follow-up of the psychiatrist's courses: "further evaluation" (SPEC §F2,
    §I), like the PHQ-9 item 9 flag. A flag stands until a later follow-up of the patient
    records a GAD-7 again; newest first."""
    newer_gad7 = FollowUp.objects.filter(
        patient=OuterRef("patient"),
        state=FollowUp.State.COMPLETED,
        gad7_total__isnull=False,
        completed_at__gt=OuterRef("completed_at"),
    )
    flags = FollowUp.objects.filter(
        gad7_evaluation_flag=True,
        state=FollowUp.State.COMPLETED,
        course__responsible_psychiatrist=user,
        site_id__in=user.site_ids,
    ).filter(~Exists(newer_gad7))
    if site_id is not None:
        flags = flags.filter(site_id=site_id)
    return flags.select_related("patient").order_by("-completed_at", "-id")


def expiring_consents(
    *, user: User, site_id: int | None = None, now: datetime | None = None
) -> QuerySet[ConsentRecord]:
    """Consents that end within 30 days with no newer consent of the same kind (SPEC §P5)."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    newer = ConsentRecord.objects.filter(
        patient=OuterRef("patient"),
        template__kind=OuterRef("template__kind"),
        signed_at__gt=OuterRef("signed_at"),
    )
    consents = ConsentRecord.objects.filter(
        patient__home_site_id__in=user.site_ids,
        patient__voided_at__isnull=True,
        withdrawn_at__isnull=True,
        valid_until__gte=today,
        valid_until__lte=today + timedelta(days=CONSENT_EXPIRY_NOTICE_DAYS),
    ).filter(~Exists(newer))
    if site_id is not None:
        consents = consents.filter(patient__home_site_id=site_id)
    return consents.select_related("patient", "template").order_by("valid_until", "id")


def followups_for_patient(*, patient, limit: int = 50) -> list[FollowUp]:
    return list(
        FollowUp.objects.filter(patient=patient)
        .select_related("completed_by", "assigned_to")
        .order_by("-due_at", "-id")[:limit]
    )
