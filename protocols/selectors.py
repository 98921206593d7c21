"""Reads for Step 1: the sign-off queue, the chart's assessments and trend."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.db.models import QuerySet
from django.utils import timezone

from clinic import signatures
from clinic.models import User
from patients.models import Patient
from protocols import instruments
from protocols.models import Assessment, ProtocolVersion, TreatmentCourse


@dataclass(frozen=True)
class QueueRow:
    assessment: Assessment
    waiting: timedelta
    absolute: list[str]
    relative: list[str]


def _present(assessment: Assessment) -> tuple[list[str], list[str]]:
    rules = assessment.course.protocol_version.parsed
    answers = assessment.contraindications or {}
    present = [c for c in rules.contraindications if (answers.get(c.code) or {}).get("present")]
    return (
        [c.label for c in present if c.is_absolute],
        [c.label for c in present if not c.is_absolute],
    )


def signoff_queue_for_user(*, user: User, limit: int = 100) -> list[QueueRow]:
    """Submitted assessments of the user's sites, oldest first, with what needs attention."""
    assessments = (
        Assessment.objects.filter(
            status=Assessment.Status.SUBMITTED, patient__home_site_id__in=user.site_ids
        )
        .select_related(
            "patient__home_site",
            "course__protocol_version__protocol",
            "course__responsible_psychiatrist",
            "submitted_by",
        )
        .order_by("submitted_at", "id")[:limit]
    )
    now = timezone.now()
    rows = []
    for assessment in assessments:
        absolute, relative = _present(assessment)
        rows.append(QueueRow(assessment, now - assessment.submitted_at, absolute, relative))
    return rows


def signoff_queue_count(*, user: User) -> int:
    """Bounded by the submitted assessments of the user's sites (served by assessment_queue)."""
    return Assessment.objects.filter(
        status=Assessment.Status.SUBMITTED, patient__home_site_id__in=user.site_ids
    ).count()


def courses_for_patient(*, patient: Patient) -> QuerySet[TreatmentCourse]:
    return TreatmentCourse.objects.filter(patient=patient).select_related(
        "protocol_version__protocol", "responsible_psychiatrist"
    )


def assessments_for_patient(*, patient: Patient, limit: int = 50) -> list[Assessment]:
    """The patient's assessments, newest first, each with `signature_invalid` checked."""
    assessments = list(
        Assessment.objects.filter(patient=patient)
        .select_related("course__protocol_version__protocol", "created_by")
        .order_by("-created_at", "-id")[:limit]
    )
    states = signatures.signatures_for_many(a for a in assessments if a.is_locked)
    for assessment in assessments:
        assessment.signature_invalid = any(not s.is_valid for s in states.get(assessment.pk, []))
    return assessments


def instrument_trend(*, assessments: list[Assessment], followups=()) -> dict:
    """PHQ-9 and GAD-7 totals over time (assessments, then follow-ups) with band edges, and
    response (PHQ-9 ≥ 50 % below the first) and remission (minimal band) marked (SPEC §F2)."""
    points = [
        (a.created_at, a.phq9_total, a.gad7_total, a.phq9_band)
        for a in assessments
        if a.phq9_total is not None or a.gad7_total is not None
    ]
    points += [
        (f.completed_at, f.phq9_total, f.gad7_total, f.phq9_band)
        for f in followups
        if f.completed_at and (f.phq9_total is not None or f.gad7_total is not None)
    ]
    points.sort(key=lambda p: p[0])
    baseline = next((p[1] for p in points if p[1] is not None), None)
    markers = []
    for when, phq9, _gad7, band in points:
        if phq9 is None or baseline is None or when == points[0][0]:
            markers.append("")
        elif band == instruments.REMISSION_BAND:
            markers.append("remission")
        elif baseline and phq9 <= baseline * (1 - instruments.RESPONSE_DROP):
            markers.append("response")
        else:
            markers.append("")
    return {
        "labels": [timezone.localtime(p[0]).strftime("%d %b %Y") for p in points],
        "phq9": [p[1] for p in points],
        "gad7": [p[2] for p in points],
        "markers": markers,
        "bands": {
            scale.code: [{"from": b.low, "label": b.label} for b in scale.bands[1:]]
            for scale in (instruments.PHQ9, instruments.GAD7)
        },
        "max": {"phq9": instruments.PHQ9.max_total, "gad7": instruments.GAD7.max_total},
    }


def weight_limits_in_force() -> tuple[Decimal, Decimal] | None:
    """The patient weight range (SPEC §P1) every protocol's current published version accepts:
    the narrowest of their `plausibility.weight_kg` limits. None when no version sets one."""
    from django.core.exceptions import ValidationError

    lows, highs = [], []
    seen: set[int] = set()
    for version in ProtocolVersion.objects.published().order_by("protocol_id", "-version"):
        if version.protocol_id in seen:
            continue
        seen.add(version.protocol_id)
        try:
            limit = version.parsed.plausibility.get("weight_kg")
        except ValidationError:
            continue
        if limit is not None:
            lows.append(limit.low)
            highs.append(limit.high)
    if not lows:
        return None
    return max(lows), min(highs)
