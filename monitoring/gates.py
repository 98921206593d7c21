"""The start gate (SPEC §G3) and the close gate (§G4): one service each, every condition named.

Views show the conditions as a checklist; services refuse to dose or discharge unless all hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.urls import reverse
from django.utils import timezone

from monitoring.evaluation import anchor_times, evaluate_reading
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


def latest_valid_predose(session: TreatmentSession) -> VitalReading | None:
    readings = session.vitals.filter(entered_in_error_at__isnull=True, is_predose=True)
    return readings.order_by("-measured_at", "-id").first()


def predose_alerts(session: TreatmentSession, reading: VitalReading | None) -> list[str]:
    if reading is None:
        return []
    rules = session.rules
    return [a.message for a in evaluate_reading(rules=rules.predose_alerts, reading=reading)]


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

    max_age = timedelta(minutes=rules.dose["predose_vitals_max_age_minutes"])
    predose = latest_valid_predose(session)
    recent = predose is not None and at - predose.measured_at <= max_age
    conditions.append(
        Condition(
            "predose-vitals",
            f"Pre-dose vitals within the last {rules.dose['predose_vitals_max_age_minutes']} min",
            recent,
            "" if recent else "Record a full set of pre-dose vitals.",
            session_url + "#vitals",
        )
    )

    high_bp = predose_alerts(session, predose) if recent else []
    if high_bp:
        decided = session.predose_decision == TreatmentSession.PredoseDecision.PROCEED
        deferred = session.predose_decision == TreatmentSession.PredoseDecision.DEFER
        conditions.append(
            Condition(
                "predose-decision",
                "Prescriber's decision on raised pre-dose blood pressure",
                decided,
                " ".join(high_bp) + (" Deferred by the prescriber." if deferred else ""),
                reverse("monitoring:predose_decision", kwargs={"session_id": session.pk}),
            )
        )
    return conditions


def latest_cssrs(patient, *, at: datetime) -> tuple[datetime, str] | None:
    """The patient's most recent C-SSRS result, from assessments or follow-ups (SPEC §G3)."""
    from followups.models import FollowUp

    screens = [
        (a.created_at, a.cssrs_risk)
        for a in Assessment.objects.filter(patient=patient, created_at__lte=at)
        .exclude(cssrs_risk="")
        .order_by("-created_at")[:1]
    ]
    screens += [
        (f.completed_at, f.cssrs_risk)
        for f in FollowUp.objects.filter(patient=patient, completed_at__lte=at)
        .exclude(cssrs_risk="")
        .order_by("-completed_at")[:1]
    ]
    return max(screens, default=None)


def observation_ends_at(session: TreatmentSession) -> datetime | None:
    """When the minimum observation is over (SPEC §M9), from the actual dose times."""
    if session.dose_started_at is None:
        return None
    rules = session.rules
    anchors = anchor_times(rules, dose_started_at=session.dose_started_at)
    if rules.observation_anchor == "infusion_end":
        if session.dose_ended_at is None:
            return None  # the infusion has not been recorded as ended
        anchors["infusion_end"] = session.dose_ended_at
    start = anchors[rules.observation_anchor]
    return start + timedelta(minutes=rules.minimum_observation_minutes)


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
    for check in session.checks.all():
        if check.is_done:
            continue
        if check.due_at is None and check_is_satisfiable_now(check, session, at):
            continue
        missing.append(check.label)
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
