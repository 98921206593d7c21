"""Reads for Step 2: the session page, the floor board, the register. Query counts are
constant in the number of readings and sessions (SPEC §N3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, F, Min, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from clinic import signatures
from clinic.models import User
from monitoring import gates
from monitoring.evaluation import evaluate_reading, minutes_between
from monitoring.models import (
    Alert,
    ControlledSubstanceEntry,
    DrugLot,
    RequiredCheck,
    TreatmentSession,
    VitalReading,
)
from protocols.models import Assessment


def floor_board_for_site(
    *, user: User, site_id: int, now: datetime | None = None
) -> QuerySet[TreatmentSession]:
    """Active sessions of one of the user's sites, with next due check and open alerts."""
    now = now or timezone.now()
    open_check = Q(
        checks__satisfied_at__isnull=True,
        checks__excused_reason="",
        checks__due_at__isnull=False,
        checks__voided_at__isnull=True,
    )
    return (
        TreatmentSession.objects.active()
        .filter(site_id=site_id, site_id__in=user.site_ids)
        .select_related("patient", "course__protocol_version__protocol", "supervising_clinician")
        .annotate(
            next_due_at=Min("checks__due_at", filter=open_check),
            next_check_label=Subquery(
                RequiredCheck.objects.filter(
                    session=OuterRef("pk"),
                    satisfied_at__isnull=True,
                    excused_reason="",
                    due_at__isnull=False,
                    voided_at__isnull=True,
                )
                .order_by("due_at", "id")
                .values("label")[:1]
            ),
            overdue_checks=Count(
                "checks", filter=open_check & Q(checks__overdue_at__lt=now), distinct=True
            ),
            open_critical=Count(
                "alerts",
                filter=Q(alerts__level="critical", alerts__acknowledged_at__isnull=True),
                distinct=True,
            ),
            open_warnings=Count(
                "alerts",
                filter=Q(alerts__level="warning", alerts__acknowledged_at__isnull=True),
                distinct=True,
            ),
        )
        .order_by("chair", "id")
    )


@dataclass(frozen=True)
class SessionPage:
    session: TreatmentSession
    readings: list[VitalReading]
    alerts: list[Alert]
    checks: list[RequiredCheck]
    observations: list
    doses: list
    next_check: RequiredCheck | None
    start_gate: list[gates.Condition]
    close_gate: list[gates.Condition]
    signatures: list
    chart: dict
    now: datetime


def session_page(*, session: TreatmentSession) -> SessionPage:
    now = timezone.now()
    readings = list(session.vitals.select_related("entered_by", "entered_in_error_by"))
    # Checks withdrawn by a re-plan stay in the record but are no longer required (SPEC §M6).
    checks = list(session.checks.required().order_by(F("due_at").asc(nulls_last=True), "id"))
    open_checks = [c for c in checks if not c.is_done and c.due_at is not None]
    valid = [r for r in readings if r.is_valid]
    return SessionPage(
        session=session,
        readings=readings,
        alerts=list(session.alerts.select_related("acknowledged_by", "reading")),
        checks=checks,
        observations=list(session.observations.select_related("recorded_by")),
        doses=list(session.doses.select_related("lot", "administered_by", "prescriber")),
        next_check=min(open_checks, key=lambda c: c.due_at) if open_checks else None,
        start_gate=gates.start_gate(session, at=now)
        if session.status in {"scheduled", "checked-in"}
        else [],
        close_gate=gates.close_gate(session, at=now) if session.status == "monitoring" else [],
        signatures=signatures.signatures_for(session) if session.is_locked else [],
        chart={
            "labels": [r.measured_at.isoformat() for r in valid],
            "sbp": [r.sbp for r in valid],
            "dbp": [r.dbp for r in valid],
            "hr": [r.hr for r in valid],
            "spo2": [r.spo2 for r in valid],
            "dose_started_at": session.dose_started_at.isoformat()
            if session.dose_started_at
            else None,
        },
        now=now,
    )


def sessions_for_patient(*, patient, limit: int = 50) -> list[TreatmentSession]:
    return list(
        TreatmentSession.objects.filter(patient=patient)
        .select_related("course__protocol_version__protocol", "site")
        .order_by("-scheduled_at", "-id")[:limit]
    )


def register_for_user(*, user: User, site_id: int | None = None) -> QuerySet:
    entries = ControlledSubstanceEntry.objects.filter(lot__site_id__in=user.site_ids)
    if site_id is not None:
        entries = entries.filter(lot__site_id=site_id)
    return entries.select_related("lot__site", "by", "witness", "prescriber", "patient").order_by(
        "at", "id"
    )


def lots_for_site(*, site_id: int) -> QuerySet[DrugLot]:
    return DrugLot.objects.filter(site_id=site_id).order_by("drug", "expires_on")


def rems_monitoring_form(*, page: SessionPage) -> dict | None:
    """The fields of the esketamine REMS Patient Monitoring Form (SPEC §M11), or None."""
    session = page.session
    if session.rules.drug != "esketamine":
        return None
    assessment = (
        Assessment.objects.filter(patient=session.patient, status=Assessment.Status.APPROVED)
        .order_by("-signed_at")
        .first()
    )
    names = ("benzodiazepines", "sedative_hypnotics", "psychostimulants", "maois", "opioids")
    concomitant = (
        ", ".join(
            f"{n.replace('_', ' ')}: {'yes' if getattr(assessment, n) else 'no'}" for n in names
        )
        if assessment
        else "no approved assessment"
    )
    valid = [r for r in page.readings if r.is_valid and r.sbp is not None]
    predose = [r for r in valid if r.is_predose]
    post = [r for r in valid if not r.is_predose]
    start = session.dose_started_at
    # The REMS form's mid-session BP is the protocol's own check (SPEC §D: BP at 40 min), named
    # by the rules; the reading nearest its due time.
    code = session.rules.rems_bp_check_code
    check = next((c for c in page.checks if c.code == code and c.due_at), None)
    at_40 = (
        min(post, key=lambda r: abs((r.measured_at - check.due_at).total_seconds()))
        if post and check
        else None
    )
    shown = [r for r in (predose[-1] if predose else None, at_40, post[-1] if post else None)]
    bp = " · ".join(
        f"{r.sbp}/{r.dbp} at {timezone.localtime(r.measured_at):%H:%M}" if r else "—" for r in shown
    )
    rules = session.rules
    before = predose[-1] if predose else None
    after = post[-1] if post else None
    events = [a.message for a in page.alerts if a.field in {"moaas", "spo2", "rr"}]
    events += [
        f"{o.event_type} ({o.get_severity_display()}): {o.outcome}"
        for o in page.observations
        if o.kind == "adverse-event"
    ]
    cadss = [o.cadss_total for o in page.observations if o.cadss_total is not None]
    if cadss:
        events.append(f"CADSS highest {max(cadss)}")
    dose = page.doses[0] if page.doses else None
    return {
        "concomitant": concomitant,
        "dose": f"{dose.dose_mg} mg ({dose.devices} devices), lot {dose.lot.lot_number}"
        if dose
        else "—",
        "minutes_monitored": minutes_between(start, session.discharged_at)
        if start and session.discharged_at
        else "—",
        "bp_readings": bp,
        "in_range_before": None
        if before is None
        else not evaluate_reading(rules=rules.predose_alerts, reading=before),
        "in_range_after": None
        if after is None
        else not evaluate_reading(rules=rules.alerts, reading=after),
        "events": "; ".join(events) or "none",
        "ready_minutes": session.discharge.ready_to_leave_minutes
        if hasattr(session, "discharge")
        else None,
    }
