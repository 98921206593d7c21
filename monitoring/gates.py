"""The start gate (SPEC §G3) and the close gate (§G4): one service each, every condition named.

Views show the conditions as a checklist; services refuse to dose or discharge unless all hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from monitoring.evaluation import (
    Baseline,
    anchor_times,
    baseline_values,
    evaluate_reading,
    is_complete_set,
    met_at,
    plan_checks,
)
from monitoring.models import Alert, RequiredCheck, TreatmentSession, VitalReading
from patients.models import ConsentKind
from patients.selectors import ConsentStatus, patient_consent_summary
from protocols.instruments import CssrsRisk
from protocols.models import Assessment, TreatmentCourse


@dataclass(frozen=True)
class Condition:
    code: str
    label: str
    met: bool
    detail: str = ""
    fix_url: str = ""


def gate_is_open(conditions: list[Condition]) -> bool:
    return all(c.met for c in conditions)


def _valid_predose(session: TreatmentSession):
    return session.vitals.filter(entered_in_error_at__isnull=True, is_predose=True).order_by(
        "-measured_at", "-id"
    )


def predose_required_fields(session: TreatmentSession) -> tuple[str, ...]:
    return tuple(session.rules.dose["predose_required_fields"])


def latest_valid_predose(
    session: TreatmentSession, readings: list[VitalReading] | None = None
) -> VitalReading | None:
    """The latest valid *complete* pre-dose set (SPEC §G3): every field the protocol requires
    (default SBP, DBP, HR, SpO2). A temperature- or SpO2-only reading never counts.

    `readings`: the session's valid pre-dose readings, newest first, when already loaded."""
    required = predose_required_fields(session)
    if readings is None:
        holding = _valid_predose(session).filter(**{f"{f}__isnull": False for f in required})
        return holding.first()
    return next((r for r in readings if is_complete_set(r, required)), None)


def predose_baseline(session: TreatmentSession) -> Baseline:
    """Per-field pre-dose baseline (SPEC §M5): the latest valid pre-dose value of each field."""
    return baseline_values(_valid_predose(session))


@dataclass(frozen=True)
class RaisedPredose:
    """A raised pre-dose BP that needs the prescriber's decision (SPEC §M5)."""

    reading: VitalReading
    messages: tuple[str, ...]


def raised_predose(
    session: TreatmentSession, readings: list[VitalReading] | None = None
) -> RaisedPredose | None:
    """The latest valid pre-dose reading whose BP needs the prescriber's proceed / defer.

    Each pre-dose rule looks at the latest valid pre-dose reading holding its field, so a later
    SpO2- or temperature-only reading never hides a raised BP. The decision must be bound to
    the latest such reading: a later raised reading needs a new decision.
    """
    readings = list(_valid_predose(session)) if readings is None else readings
    raised: dict[int, tuple[VitalReading, list[str]]] = {}
    for rule in session.rules.predose_alerts:
        holding = next((r for r in readings if getattr(r, rule.field) is not None), None)
        if holding is None:
            continue
        for alert in evaluate_reading(rules=[rule], reading=holding):
            raised.setdefault(holding.pk, (holding, []))[1].append(alert.message)
    if not raised:
        return None
    reading, _messages = max(raised.values(), key=lambda item: (item[0].measured_at, item[0].pk))
    # Messages of every raised field, whichever reading raised them.
    all_messages = tuple(m for _, found in raised.values() for m in found)
    return RaisedPredose(reading, all_messages)


def predose_decision_holds(session: TreatmentSession, raised: RaisedPredose | None) -> bool:
    """A *proceed* made on the very reading that is raised now (SPEC §M5)."""
    return (
        raised is not None
        and session.predose_decision == TreatmentSession.PredoseDecision.PROCEED
        and session.predose_decision_reading_id == raised.reading.pk
    )


def start_gate(session: TreatmentSession, *, at: datetime | None = None) -> list[Condition]:
    """Every condition of SPEC §G3 for `session`, met or not, with where to fix it."""
    at = at or timezone.now()
    rules = session.rules
    patient = session.patient
    chart = reverse("patients:chart", kwargs={"patient_id": patient.pk})
    session_url = reverse("monitoring:session", kwargs={"session_id": session.pk})
    conditions: list[Condition] = []

    conditions.append(
        Condition(
            "course",
            "Treatment course active",
            session.course.status == TreatmentCourse.Status.ACTIVE,
            f"Course is {session.course.get_status_display().lower()}.",
            chart,
        )
    )

    summary = {item.kind.value: item for item in patient_consent_summary(patient=patient, at=at)}
    for kind in rules.consent_kinds:
        item = summary.get(kind)
        status = item.status if item else ConsentStatus.NOT_SIGNED
        conditions.append(
            Condition(
                f"consent:{kind}",
                f"Valid consent: {ConsentKind(kind).label}",
                status == ConsentStatus.VALID,
                f"Consent is {status.label.lower()}.",
                reverse("patients:consent_new", kwargs={"patient_id": patient.pk}),
            )
        )
    if rules.drug == "esketamine":
        rems = summary.get(ConsentKind.ESKETAMINE_REMS.value)
        enrolled = bool(rems and rems.is_valid and rems.consent.prescriber_id)
        conditions.append(
            Condition(
                "rems",
                "REMS enrollment recorded (patient and prescriber)",
                enrolled,
                "" if enrolled else "No valid REMS enrollment co-signed by the prescriber.",
                reverse("patients:consent_new", kwargs={"patient_id": patient.pk}),
            )
        )

    signed = (
        Assessment.objects.filter(
            patient=patient,
            status__in=[Assessment.Status.APPROVED, Assessment.Status.NOT_APPROVED],
            signed_at__lte=at,
        )
        .order_by("-signed_at", "-id")
        .first()
    )
    fresh_after = at - timedelta(days=rules.assessment_validity_days)
    if signed is None:
        detail, met = "No signed pre-treatment assessment.", False
    elif signed.status == Assessment.Status.NOT_APPROVED:
        detail, met = "The latest signed assessment was not approved.", False
    elif signed.signed_at < fresh_after:
        detail, met = (
            f"Approved more than {rules.assessment_validity_days} days ago: reassess.",
            False,
        )
    else:
        detail, met = f"Approved {timezone.localtime(signed.signed_at):%d %b %Y}.", True
    conditions.append(
        Condition("assessment", "Pre-treatment assessment approved and current", met, detail, chart)
    )

    latest_screen = latest_cssrs(patient, at=at)
    high_risk = latest_screen is not None and latest_screen[1] == CssrsRisk.HIGH
    conditions.append(
        Condition(
            "suicide-risk",
            "No open high suicide risk",
            not high_risk,
            f"The latest C-SSRS ({timezone.localtime(latest_screen[0]):%d %b %Y}) is high risk: "
            "the psychiatrist reviews before any dose."
            if high_risk
            else "",
            chart,
        )
    )

    conditions.append(
        Condition(
            "escort",
            "Escort / transport home confirmed",
            session.escort_confirmed,
            "" if session.escort_confirmed else "Confirm at check-in who takes the patient home.",
            reverse("monitoring:check_in", kwargs={"session_id": session.pk}),
        )
    )

    max_minutes = rules.dose["predose_vitals_max_age_minutes"]
    max_age = timedelta(minutes=max_minutes)
    predose_readings = list(_valid_predose(session))
    predose = latest_valid_predose(session, predose_readings)
    recent = predose is not None and timedelta(0) <= at - predose.measured_at <= max_age
    required = ", ".join(FIELD_LABELS.get(f, f) for f in predose_required_fields(session))
    if recent:
        detail = f"Measured {timezone.localtime(predose.measured_at):%H:%M}."
    elif predose is None:
        detail = f"Record a complete set of pre-dose vitals ({required})."
    else:
        detail = (
            f"The last complete set ({timezone.localtime(predose.measured_at):%H:%M}) is more "
            f"than {max_minutes} min old: record a new one ({required})."
        )
    conditions.append(
        Condition(
            "predose-vitals",
            f"Complete pre-dose vitals within the last {max_minutes} min",
            recent,
            detail,
            session_url + "#vitals",
        )
    )

    open_critical = list(
        session.alerts.filter(level=Alert.Level.CRITICAL, acknowledged_at__isnull=True)
    )
    conditions.append(
        Condition(
            "critical-alerts",
            "No unacknowledged critical alert",
            not open_critical,
            " ".join(a.message for a in open_critical)
            + (" The anesthesiologist or psychiatrist acknowledges it." if open_critical else ""),
            session_url + "#alerts",
        )
    )

    raised = raised_predose(session, predose_readings)
    if raised is not None:
        holds = predose_decision_holds(session, raised)
        deferred = (
            session.predose_decision == TreatmentSession.PredoseDecision.DEFER
            and session.predose_decision_reading_id == raised.reading.pk
        )
        stale = bool(session.predose_decision) and not holds and not deferred
        detail = " ".join(raised.messages)
        if deferred:
            detail += " Deferred by the prescriber."
        elif stale:
            detail += (
                " A new raised reading "
                f"({timezone.localtime(raised.reading.measured_at):%H:%M}) needs a new decision."
            )
        conditions.append(
            Condition(
                "predose-decision",
                "Prescriber's decision on raised pre-dose blood pressure",
                holds,
                detail,
                reverse("monitoring:predose_decision", kwargs={"session_id": session.pk}),
            )
        )
    return conditions


FIELD_LABELS = {
    "sbp": "systolic BP",
    "dbp": "diastolic BP",
    "hr": "heart rate",
    "rr": "respiratory rate",
    "spo2": "SpO2",
    "temperature_c": "temperature",
    "moaas": "MOAA/S",
}


def latest_cssrs(patient, *, at: datetime) -> tuple[datetime, str] | None:
    """The patient's most recently *administered* C-SSRS, from assessments or follow-ups
    (SPEC §G3): the time the screen was answered, not the time its record was created."""
    from followups.models import FollowUp

    answered = Coalesce("cssrs_administered_at", "created_at")
    screens = [
        (a.answered, a.cssrs_risk)
        for a in Assessment.objects.filter(patient=patient)
        .exclude(cssrs_risk="")
        .annotate(answered=answered)
        .filter(answered__lte=at)
        .order_by("-answered", "-id")[:1]
    ]
    screens += [
        (f.completed_at, f.cssrs_risk)
        for f in FollowUp.objects.filter(patient=patient, completed_at__lte=at)
        .exclude(cssrs_risk="")
        .order_by("-completed_at", "-id")[:1]
    ]
    # On a tie the higher risk counts (the safer reading).
    order = {CssrsRisk.HIGH: 3, CssrsRisk.MODERATE: 2, CssrsRisk.LOW: 1}
    return max(screens, key=lambda s: (s[0], order.get(s[1], 0)), default=None)


def observation_ends_at(session: TreatmentSession) -> datetime | None:
    """When the minimum observation is over (SPEC §M9), from the actual dose times."""
    if session.dose_started_at is None:
        return None
    rules = session.rules
    if rules.observation_anchor == "infusion_end" and session.dose_ended_at is None:
        return None  # the infusion has not been recorded as ended
    anchors = anchor_times(
        rules, dose_started_at=session.dose_started_at, dose_ended_at=session.dose_ended_at
    )
    return anchors["observation_end"]


def check_is_satisfiable_now(check: RequiredCheck, session: TreatmentSession, at: datetime) -> bool:
    """A before-discharge check is met by a reading (or CADSS) within its window before now."""
    since = at - timedelta(minutes=check.window_minutes)
    if check.measures == ["cadss"]:
        return session.observations.filter(
            kind="cadss", observed_at__gte=since, cadss_total__isnull=False
        ).exists()
    readings = session.vitals.filter(entered_in_error_at__isnull=True, measured_at__gte=since)
    for field in check.measures:
        readings = readings.filter(**{f"{field}__isnull": False})
    return readings.exists()


def _unplanned_missing(session: TreatmentSession, at: datetime) -> list[str]:
    """Recovery checks run until discharge (SPEC §M6): those fallen due by `at` that no write
    has materialized yet, and that no valid reading meets, are missing too."""
    if session.dose_started_at is None or session.dose_ended_at is None:
        return []
    plan = plan_checks(
        session.rules,
        dose_started_at=session.dose_started_at,
        dose_ended_at=session.dose_ended_at,
        until=at,
    )
    existing = {(c.code, c.due_at) for c in session.checks.all()}
    due = [p for p in plan if p.due_at is not None and p.due_at <= at]
    due = [p for p in due if (p.code, p.due_at) not in existing]
    if not due:
        return []
    readings = list(session.vitals.filter(entered_in_error_at__isnull=True))
    cadss = list(session.observations.filter(kind="cadss", cadss_total__isnull=False))
    return [p.label for p in due if met_at(p, readings, cadss) is None]


def close_gate(session: TreatmentSession, *, at: datetime | None = None) -> list[Condition]:
    """SPEC §G4, before the discharge criteria themselves (scored on the discharge form)."""
    at = at or timezone.now()
    conditions = []
    ends = observation_ends_at(session)
    if ends is None:
        detail = (
            "Dosing has not started."
            if session.dose_started_at is None
            else "Record the end of the infusion first."
        )
        conditions.append(
            Condition("observation", "Minimum observation time passed", False, detail)
        )
    else:
        remaining = ends - at
        met = remaining <= timedelta(0)
        conditions.append(
            Condition(
                "observation",
                f"Minimum observation time ({session.rules.minimum_observation_minutes}"
                " min) passed",
                met,
                ""
                if met
                else f"{int(remaining.total_seconds() // 60) + 1} min to go "
                f"(until {timezone.localtime(ends):%H:%M}).",
            )
        )
    missing = []
    for check in session.checks.required():
        if check.is_done:
            continue
        if check.due_at is not None and check.due_at > at:
            # Not due yet: recovery checks run until discharge, so one falling due after it is
            # not owed (the discharge withdraws it).
            continue
        if check.due_at is None and check_is_satisfiable_now(check, session, at):
            continue
        missing.append(check.label)
    missing += _unplanned_missing(session, at)
    conditions.append(
        Condition(
            "checks",
            "Every required check recorded or excused",
            not missing,
            ("Missing: " + "; ".join(missing)) if missing else "",
        )
    )
    open_critical = session.alerts.filter(
        level=Alert.Level.CRITICAL, acknowledged_at__isnull=True
    ).count()
    conditions.append(
        Condition(
            "alerts",
            "Every critical alert acknowledged",
            open_critical == 0,
            f"{open_critical} critical alert(s) not acknowledged." if open_critical else "",
        )
    )
    return conditions
