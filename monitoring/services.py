"""Writes for Step 2 (SPEC §M). Every write locks the session row, so concurrent chairside
entries serialize instead of losing each other."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from clinic import signatures
from clinic.models import Notification, Role, Signature, User
from clinic.notifications import notify
from clinic.services import attribute
from followups import services as followup_services
from monitoring import gates
from monitoring.evaluation import evaluate_reading, plan_checks, plausibility_problems
from monitoring.models import (
    Alert,
    ControlledSubstanceEntry,
    Discharge,
    DoseAdministration,
    DrugLot,
    Incident,
    Observation,
    RequiredCheck,
    TreatmentSession,
    VitalReading,
)
from protocols.models import TreatmentCourse

VITAL_FIELDS = ("sbp", "dbp", "hr", "rr", "spo2", "temperature_c", "moaas")
SESSION_NOT_ACTIVE = "This session is not in progress."
MEASURED_IN_FUTURE = "The measurement time cannot be in the future."
MEASURED_BEFORE_CHECK_IN = "The measurement time cannot be before check-in."
NO_VALUES = "Enter at least one measurement."
GATE_CLOSED = "Dosing cannot start: {conditions}."
CLOSE_GATE = "Discharge refused: {conditions}."
WITNESS_SAME_PERSON = "The witness must be a different person."
WRONG_WITNESS_PASSWORD = "The witness's password is not correct."  # noqa: S105
FUTURE_TOLERANCE = timedelta(minutes=1)


def _locked_session(session: TreatmentSession) -> TreatmentSession:
    """Re-read the session under a row lock: one writer per session at a time."""
    return (
        TreatmentSession.objects.select_for_update()
        .select_related("course__protocol_version", "patient__home_site", "site")
        .get(pk=session.pk)
    )


def _session_url(session: TreatmentSession) -> str:
    return reverse("monitoring:session", kwargs={"session_id": session.pk})


def _on_site_clinician(user: User, session: TreatmentSession, *roles: Role) -> bool:
    return (
        user.is_active
        and session.site_id in user.site_ids
        and any(user.has_role(role) for role in roles)
    )


# --- Lifecycle ----------------------------------------------------------------------------------


@transaction.atomic
def session_schedule(
    *,
    course: TreatmentCourse,
    acting_user: User,
    scheduled_at: datetime,
    chair: str,
    supervising_clinician: User,
) -> TreatmentSession:
    if course.status in {TreatmentCourse.Status.COMPLETED, TreatmentCourse.Status.STOPPED}:
        raise ValidationError("The course is closed.")
    site = course.patient.home_site
    session = TreatmentSession(
        course=course,
        patient=course.patient,
        site=site,
        scheduled_at=scheduled_at,
        chair=chair.strip(),
        supervising_clinician=supervising_clinician,
        created_by=acting_user,
    )
    if not _on_site_clinician(
        supervising_clinician, session, Role.ANESTHESIOLOGIST, Role.PSYCHIATRIST
    ):
        raise ValidationError(
            {"supervising_clinician": "Choose an anesthesiologist or psychiatrist of the site."}
        )
    session.full_clean()
    attribute(session, acting_user=acting_user, reason="Scheduled")
    session.save()
    return session


@transaction.atomic
def session_check_in(
    *, session: TreatmentSession, acting_user: User, escort_confirmed: bool, escort_details: str
) -> TreatmentSession:
    session = _locked_session(session)
    if session.status != TreatmentSession.Status.SCHEDULED:
        raise ValidationError("Only a scheduled session can be checked in.")
    session.status = TreatmentSession.Status.CHECKED_IN
    session.checked_in_at = timezone.now()
    session.checked_in_by = acting_user
    session.escort_confirmed = escort_confirmed
    session.escort_details = escort_details.strip()
    attribute(session, acting_user=acting_user, reason="Checked in")
    session.save(
        update_fields=[
            "status",
            "checked_in_at",
            "checked_in_by",
            "escort_confirmed",
            "escort_details",
        ]
    )
    return session


@transaction.atomic
def session_confirm_escort(
    *, session: TreatmentSession, acting_user: User, escort_details: str
) -> TreatmentSession:
    session = _locked_session(session)
    if not session.is_active:
        raise ValidationError(SESSION_NOT_ACTIVE)
    if not escort_details.strip():
        raise ValidationError({"escort_details": "Name who takes the patient home, and how."})
    session.escort_confirmed, session.escort_details = True, escort_details.strip()
    attribute(session, acting_user=acting_user, reason="Escort confirmed")
    session.save(update_fields=["escort_confirmed", "escort_details"])
    return session


@transaction.atomic
def predose_decide(
    *, session: TreatmentSession, acting_user: User, decision: str, reason: str
) -> TreatmentSession:
    """The prescriber's proceed / defer on a raised pre-dose BP (SPEC §M5)."""
    session = _locked_session(session)
    if not _on_site_clinician(acting_user, session, Role.PSYCHIATRIST):
        raise PermissionDenied("Only the prescriber (a psychiatrist of the site) decides.")
    if session.status != TreatmentSession.Status.CHECKED_IN:
        raise ValidationError("The decision is taken before dosing.")
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason for the decision."})
    session.predose_decision = decision
    session.predose_decision_reason = reason.strip()
    session.predose_decision_by = acting_user
    session.predose_decision_at = timezone.now()
    attribute(session, acting_user=acting_user, reason=f"Pre-dose decision: {decision}")
    session.save(
        update_fields=[
            "predose_decision",
            "predose_decision_reason",
            "predose_decision_by",
            "predose_decision_at",
        ]
    )
    return session


@transaction.atomic
def session_abort(*, session: TreatmentSession, acting_user: User, reason: str) -> TreatmentSession:
    session = _locked_session(session)
    if session.status in {TreatmentSession.Status.DISCHARGED, TreatmentSession.Status.ABORTED}:
        raise ValidationError("This session is already closed.")
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason for aborting the session."})
    session.status = TreatmentSession.Status.ABORTED
    session.aborted_at = timezone.now()
    session.abort_reason = reason.strip()
    attribute(session, acting_user=acting_user, reason=f"Aborted: {reason.strip()}")
    session.save(update_fields=["status", "aborted_at", "abort_reason"])
    return session


# --- Dose and controlled-substance register -------------------------------------------------


def _register_line(
    *, lot: DrugLot, kind: str, amount_mg: Decimal, by: User, at: datetime, **extra: Any
) -> ControlledSubstanceEntry:
    """Append a register line with the lot's running balance; a negative balance is a
    discrepancy and opens an incident (SPEC §M12)."""
    lot = DrugLot.objects.select_for_update().get(pk=lot.pk)
    last = lot.entries.order_by("-id").first()
    balance = last.balance_mg if last else Decimal(0)
    balance = (
        balance + amount_mg
        if kind == ControlledSubstanceEntry.Kind.RECEIPT
        else (balance - amount_mg)
    )
    entry = ControlledSubstanceEntry.objects.create(
        lot=lot, kind=kind, amount_mg=amount_mg, balance_mg=balance, by=by, at=at, **extra
    )
    if balance < 0:
        incident = Incident(
            site=lot.site,
            kind=Incident.Kind.CS_DISCREPANCY,
            lot=lot,
            opened_at=at,
            opened_by=by,
            description=f"Register line {entry.pk} takes the balance of {lot} below zero "
            f"({balance} mg).",
        )
        attribute(incident, acting_user=by, reason="Opened automatically")
        incident.save()
    return entry


@transaction.atomic
def lot_receive(
    *,
    site,
    acting_user: User,
    drug: str,
    lot_number: str,
    concentration_mg_per_ml: Decimal,
    expires_on,
    received_mg: Decimal,
) -> DrugLot:
    lot = DrugLot(
        site=site,
        drug=drug,
        lot_number=lot_number.strip(),
        concentration_mg_per_ml=concentration_mg_per_ml,
        expires_on=expires_on,
        received_mg=received_mg,
        received_at=timezone.now(),
    )
    lot.full_clean()
    attribute(lot, acting_user=acting_user, reason="Received")
    lot.save()
    _register_line(
        lot=lot,
        kind=ControlledSubstanceEntry.Kind.RECEIPT,
        amount_mg=received_mg,
        by=acting_user,
        at=lot.received_at,
        reason="Received into stock",
    )
    return lot


def _quantize(value: Decimal, places: str) -> Decimal:
    return value.quantize(Decimal(places), rounding=ROUND_HALF_UP)


def dose_record(
    *,
    session: TreatmentSession,
    acting_user: User,
    lot: DrugLot,
    dose_mg: Decimal,
    volume_ml: Decimal,
    started_at: datetime,
    prescriber: User,
    override_reason: str = "",
) -> DoseAdministration:
    """Record the dose (SPEC §M2) once the start gate is open; dosing starts the schedule."""
    with transaction.atomic():
        session = _locked_session(session)
        rules = session.rules
        errors: dict[str, str] = {}
        if session.status != TreatmentSession.Status.CHECKED_IN:
            raise ValidationError("The dose is recorded once, after check-in.")
        now = timezone.now()
        conditions = gates.start_gate(session, at=now)
        if not gates.gate_is_open(conditions):
            failing = "; ".join(c.label for c in conditions if not c.met)
            raise ValidationError(GATE_CLOSED.format(conditions=failing), code="gate")
        dose = rules.dose
        route = dose["route"]
        if lot.site_id != session.site_id or lot.drug != rules.drug:
            errors["lot"] = f"Choose a {rules.drug} lot held at this site."
        elif lot.expires_on < timezone.localdate(now):
            errors["lot"] = "This lot has expired."
        predose = gates.latest_valid_predose(session)
        # Minute precision: the form's default start is the current minute.
        checked_in_minute = session.checked_in_at.replace(second=0, microsecond=0)
        if started_at > now + FUTURE_TOLERANCE or started_at < checked_in_minute:
            errors["started_at"] = "The start must be between check-in and now."
        elif predose is not None and started_at < predose.measured_at.replace(
            second=0, microsecond=0
        ):
            errors["started_at"] = (
                "The dose cannot start before the pre-dose vitals it relies on were measured."
            )
        if not _on_site_clinician(prescriber, session, Role.PSYCHIATRIST):
            errors["prescriber"] = "The prescriber must be a psychiatrist present at the site."
        if dose_mg <= 0:
            errors["dose_mg"] = "Enter the dose in mg."
        expected_volume = dose_mg / lot.concentration_mg_per_ml
        if abs(expected_volume - volume_ml) > Decimal("0.05"):
            errors["volume_ml"] = (
                f"{dose_mg} mg at {lot.concentration_mg_per_ml} mg/mL is "
                f"{_quantize(expected_volume, '0.01')} mL."
            )
        patient = session.patient
        weight, per_kg, devices = patient.weight_kg, None, None
        if route == "iv":
            max_age = timedelta(days=dose["weight_max_age_days"])
            measured = patient.weight_measured_on
            if weight is None or measured is None or timezone.localdate(now) - measured > max_age:
                errors["dose_mg"] = (
                    f"Weigh the patient: mg/kg needs a weight from the last "
                    f"{dose['weight_max_age_days']} days."
                )
            else:
                per_kg = _quantize(dose_mg / weight, "0.001")
                low, high = (Decimal(str(v)) for v in dose["allowed_mg_per_kg"])
                if not low <= per_kg <= high and not override_reason.strip():
                    errors["override_reason"] = (
                        f"{per_kg} mg/kg is outside {low}–{high} mg/kg: the prescriber's "
                        "override reason is required."
                    )
        elif route == "intranasal":
            device = Decimal(str(dose["device_mg"]))
            low, high = (Decimal(str(v)) for v in dose["allowed_mg"])
            if dose_mg % device or not low <= dose_mg <= high:
                errors["dose_mg"] = (
                    f"Intranasal doses are whole {device} mg devices between {low} and {high} mg."
                )
            else:
                devices = int(dose_mg / device)
        if errors:
            raise ValidationError(errors)
        record = DoseAdministration(
            session=session,
            lot=lot,
            route=route,
            concentration_mg_per_ml=lot.concentration_mg_per_ml,
            dose_mg=dose_mg,
            weight_kg=weight,
            weight_measured_on=patient.weight_measured_on,
            dose_mg_per_kg=per_kg,
            volume_ml=volume_ml,
            devices=devices,
            started_at=started_at,
            administered_by=acting_user,
            prescriber=prescriber,
            override_reason=override_reason.strip(),
        )
        record.full_clean()
        attribute(record, acting_user=acting_user, reason="Dose recorded")
        record.save()
        _register_line(
            lot=lot,
            kind=ControlledSubstanceEntry.Kind.ADMINISTRATION,
            amount_mg=dose_mg,
            volume_ml=volume_ml,
            by=acting_user,
            at=started_at,
            prescriber=prescriber,
            session=session,
            patient=patient,
        )
        session.status = TreatmentSession.Status.DOSING
        session.dose_started_at = started_at
        attribute(session, acting_user=acting_user, reason="Dosing started")
        session.save(update_fields=["status", "dose_started_at"])
        # Checks already met (the pre-dose reading) are saved met: one history row each.
        readings, cadss = _evidence(session)
        for planned in plan_checks(rules, dose_started_at=started_at):
            check = RequiredCheck(
                session=session,
                code=planned.code,
                label=planned.label,
                measures=list(planned.measures),
                due_at=planned.due_at,
                window_minutes=planned.window_minutes,
                window_before_minutes=planned.window_before_minutes,
                overdue_at=planned.due_at + timedelta(minutes=planned.window_minutes)
                if planned.due_at
                else None,
            )
            if check.due_at is not None:
                check.satisfied_at = _met_at(check, readings, cadss)
            attribute(
                check,
                acting_user=acting_user,
                reason="Scheduled from the protocol"
                + ("; recorded in window" if check.satisfied_at else ""),
            )
            check.save()
        return record


@transaction.atomic
def dose_complete(*, session: TreatmentSession, acting_user: User, ended_at: datetime) -> None:
    """Infusion ended (IV) or last device given (intranasal): monitoring continues."""
    session = _locked_session(session)
    if session.status != TreatmentSession.Status.DOSING:
        raise ValidationError("The dose is not running.")
    if ended_at < session.dose_started_at or ended_at > timezone.now() + FUTURE_TOLERANCE:
        raise ValidationError({"ended_at": "The end must be between the start and now."})
    dose = session.doses.order_by("-id").first()
    dose.ended_at = ended_at
    attribute(dose, acting_user=acting_user, reason="Dose completed")
    dose.save(update_fields=["ended_at"])
    session.status = TreatmentSession.Status.MONITORING
    session.dose_ended_at = ended_at
    attribute(session, acting_user=acting_user, reason="Dose completed, monitoring")
    session.save(update_fields=["status", "dose_ended_at"])


@transaction.atomic
def waste_record(
    *,
    lot: DrugLot,
    acting_user: User,
    amount_mg: Decimal,
    reason: str,
    witness: User,
    witness_password: str,
    session: TreatmentSession | None = None,
) -> ControlledSubstanceEntry:
    """Waste needs a different person as witness, who re-enters their password (§M12)."""
    if witness.pk == acting_user.pk:
        raise ValidationError({"witness": WITNESS_SAME_PERSON})
    if not witness.is_active or not witness.check_password(witness_password or ""):
        raise ValidationError({"witness_password": WRONG_WITNESS_PASSWORD})
    if lot.site_id not in witness.site_ids:
        raise ValidationError({"witness": "The witness must be staff of the lot's site."})
    if amount_mg is None or amount_mg <= 0:
        raise ValidationError({"amount_mg": "Enter the amount wasted in mg."})
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason for the waste."})
    return _register_line(
        lot=lot,
        kind=ControlledSubstanceEntry.Kind.WASTE,
        amount_mg=amount_mg,
        by=acting_user,
        at=timezone.now(),
        witness=witness,
        reason=reason.strip(),
        session=session,
        patient=session.patient if session else None,
    )


# --- Vitals, alerts, checks, observations -------------------------------------------------------


def vitals_record(
    *,
    session: TreatmentSession,
    acting_user: User,
    measured_at: datetime | None = None,
    client_token: uuid.UUID | None = None,
    **values: Any,
) -> VitalReading:
    """Save one reading, evaluate it against the session's protocol, satisfy due checks.

    The same `client_token` twice (a double-submitted form) returns the first reading.
    """
    client_token = client_token or uuid.uuid4()
    try:
        with transaction.atomic():
            return _vitals_record(
                session=session,
                acting_user=acting_user,
                measured_at=measured_at,
                client_token=client_token,
                **values,
            )
    except IntegrityError:
        existing = VitalReading.objects.filter(session=session, client_token=client_token).first()
        if existing is None:
            raise
        return existing


def _vitals_record(*, session, acting_user, measured_at, client_token, **values) -> VitalReading:
    session = _locked_session(session)
    existing = session.vitals.filter(client_token=client_token).first()
    if existing is not None:
        return existing
    if not session.is_active:
        raise ValidationError(SESSION_NOT_ACTIVE)
    unknown = set(values) - set(VITAL_FIELDS)
    if unknown:
        raise TypeError(f"Unknown vital fields: {sorted(unknown)}")
    now = timezone.now()
    measured_at = measured_at or now
    errors = plausibility_problems(session.rules, values)
    if measured_at > now + FUTURE_TOLERANCE:
        errors["measured_at"] = MEASURED_IN_FUTURE
    elif measured_at < session.checked_in_at:
        errors["measured_at"] = MEASURED_BEFORE_CHECK_IN
    if all(values.get(f) is None for f in VITAL_FIELDS):
        errors["__all__"] = NO_VALUES
    if errors:
        raise ValidationError(errors)
    reading = VitalReading(
        session=session,
        measured_at=measured_at,
        entered_at=now,
        entered_by=acting_user,
        client_token=client_token,
        is_predose=session.dose_started_at is None or measured_at < session.dose_started_at,
        **{f: values.get(f) for f in VITAL_FIELDS},
    )
    reading.full_clean()
    attribute(reading, acting_user=acting_user, reason="Recorded")
    reading.save()
    if not reading.is_predose:
        _raise_alerts(session, reading)
    _satisfy_checks(session, acting_user)
    return reading


def _raise_alerts(session: TreatmentSession, reading: VitalReading) -> list[Alert]:
    valid = session.vitals.filter(entered_in_error_at__isnull=True).exclude(pk=reading.pk)
    baseline = valid.filter(is_predose=True).order_by("-measured_at", "-id").first()
    # Either side: a back-dated reading can complete a two-readings rule too (SPEC §M3).
    earlier = valid.filter(
        measured_at__gte=reading.measured_at - timedelta(hours=1),
        measured_at__lte=reading.measured_at + timedelta(hours=1),
    )
    alerts = []
    for raised in evaluate_reading(
        rules=session.rules.alerts, reading=reading, baseline=baseline, earlier=earlier
    ):
        alert = Alert(
            session=session,
            reading=reading,
            level=raised.level,
            field=raised.field,
            message=raised.message,
            raised_at=reading.entered_at,
        )
        attribute(alert, acting_user=reading.entered_by, reason="Raised")
        alert.save()
        alerts.append(alert)
        if raised.level == Alert.Level.CRITICAL:
            notify(
                recipient=session.supervising_clinician,
                kind=Notification.Kind.CRITICAL_ALERT,
                title=f"Critical alert in chair {session.chair}: acknowledge it",
                url=_session_url(session),
            )
    return alerts


def _evidence(session: TreatmentSession) -> tuple[list[VitalReading], list[Observation]]:
    readings = list(session.vitals.filter(entered_in_error_at__isnull=True))
    cadss = list(session.observations.filter(kind="cadss", cadss_total__isnull=False))
    return readings, cadss


def _met_at(check: RequiredCheck, readings, cadss) -> datetime | None:
    """When a valid reading (or CADSS) inside the check's window first met it, if one did."""
    low = check.due_at - timedelta(minutes=check.window_before_minutes)
    high = check.due_at + timedelta(minutes=check.window_minutes)
    if check.measures == ["cadss"]:
        times = [o.observed_at for o in cadss if low <= o.observed_at <= high]
    else:
        times = [
            r.measured_at
            for r in readings
            if low <= r.measured_at <= high
            and all(getattr(r, m) is not None for m in check.measures)
        ]
    return min(times) if times else None


def _satisfy_checks(session: TreatmentSession, acting_user: User) -> None:
    """Mark due checks met by a valid reading (or CADSS) inside their window."""
    readings, cadss = _evidence(session)
    for check in session.checks.filter(satisfied_at__isnull=True, due_at__isnull=False):
        met_at = _met_at(check, readings, cadss)
        if met_at is not None:
            check.satisfied_at = met_at
            attribute(check, acting_user=acting_user, reason="Recorded in window")
            check.save(update_fields=["satisfied_at"])


@transaction.atomic
def vitals_mark_error(*, reading: VitalReading, acting_user: User, reason: str) -> VitalReading:
    """SPEC §M8: a wrong reading is marked entered in error, never edited; both stay."""
    session = _locked_session(reading.session)
    reading = VitalReading.objects.select_for_update().get(pk=reading.pk)
    if not session.is_active:
        raise ValidationError(SESSION_NOT_ACTIVE)
    if reading.entered_in_error_at is not None:
        raise ValidationError("This reading is already marked in error.")
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason the reading is wrong."})
    reading.entered_in_error_at = timezone.now()
    reading.entered_in_error_by = acting_user
    reading.error_reason = reason.strip()
    attribute(reading, acting_user=acting_user, reason=f"Entered in error: {reason.strip()}")
    reading.save(update_fields=["entered_in_error_at", "entered_in_error_by", "error_reason"])
    return reading


@transaction.atomic
def alert_acknowledge(*, alert: Alert, acting_user: User, action_taken: str) -> Alert:
    session = _locked_session(alert.session)
    if session.is_locked:
        raise ValidationError("This session is discharged and locked.")
    if not _on_site_clinician(acting_user, session, Role.ANESTHESIOLOGIST, Role.PSYCHIATRIST):
        raise PermissionDenied("Alerts are acknowledged by the anesthesiologist or psychiatrist.")
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    if alert.acknowledged_at is not None:
        raise ValidationError("This alert was already acknowledged.")
    if not action_taken.strip():
        raise ValidationError({"action_taken": "Record the action taken."})
    alert.acknowledged_at = timezone.now()
    alert.acknowledged_by = acting_user
    alert.action_taken = action_taken.strip()
    attribute(alert, acting_user=acting_user, reason="Acknowledged")
    alert.save(update_fields=["acknowledged_at", "acknowledged_by", "action_taken"])
    if not session.alerts.filter(level=Alert.Level.CRITICAL, acknowledged_at__isnull=True).exists():
        # Every critical alert of the session is handled: its notices are done with.
        Notification.objects.filter(
            url=_session_url(session),
            kind=Notification.Kind.CRITICAL_ALERT,
            read_at__isnull=True,
        ).update(read_at=alert.acknowledged_at)
    return alert


@transaction.atomic
def check_excuse(*, check: RequiredCheck, acting_user: User, reason: str) -> RequiredCheck:
    """A missed check needs a reason: a recorded protocol deviation (SPEC §M6)."""
    _locked_session(check.session)
    check = RequiredCheck.objects.select_for_update().get(pk=check.pk)
    if check.is_done:
        raise ValidationError("This check is already done or excused.")
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason the check was missed."})
    check.excused_reason, check.excused_by = reason.strip(), acting_user
    attribute(check, acting_user=acting_user, reason=f"Deviation: {reason.strip()}")
    check.save(update_fields=["excused_reason", "excused_by"])
    return check


@transaction.atomic
def observation_record(
    *,
    session: TreatmentSession,
    acting_user: User,
    kind: str,
    observed_at: datetime | None = None,
    **fields: Any,
) -> Observation:
    session = _locked_session(session)
    if not session.is_active:
        raise ValidationError(SESSION_NOT_ACTIVE)
    observed_at = observed_at or timezone.now()
    if observed_at > timezone.now() + FUTURE_TOLERANCE:
        raise ValidationError({"observed_at": MEASURED_IN_FUTURE})
    observation = Observation(
        session=session, kind=kind, observed_at=observed_at, recorded_by=acting_user, **fields
    )
    if kind == Observation.Kind.CADSS and observation.cadss_total is None:
        raise ValidationError({"cadss_total": "Enter the CADSS total (0–92)."})
    if kind == Observation.Kind.ADVERSE_EVENT and not (
        observation.event_type and observation.severity
    ):
        raise ValidationError({"event_type": "Give the type and severity of the event."})
    if kind == Observation.Kind.NOTE and not observation.text.strip():
        raise ValidationError({"text": "Write the observation."})
    observation.full_clean()
    attribute(observation, acting_user=acting_user, reason="Recorded")
    observation.save()
    _satisfy_checks(session, acting_user)
    return observation


# --- Discharge ------------------------------------------------------------------------------


def discharge_criteria_problems(session: TreatmentSession, values: dict) -> dict[str, str]:
    """The discharge criteria of the session's protocol version (SPEC §M9)."""
    rule = session.rules.discharge
    problems = {}
    total = sum(
        values[f]
        for f in (
            "aldrete_activity",
            "aldrete_respiration",
            "aldrete_circulation",
            "aldrete_consciousness",
            "aldrete_spo2",
        )
    )
    if total < rule["aldrete_min"]:
        problems["aldrete_activity"] = (
            f"Modified Aldrete total is {total}; discharge needs {rule['aldrete_min']} or more."
        )
    if values["moaas"] != rule["moaas_required"]:
        problems["moaas"] = f"MOAA/S must be back to {rule['moaas_required']}."
    if rule["escort_required"] and not values["escort_present"]:
        problems["escort_present"] = "An escort must be present."
    if rule["no_driving_instruction"] and not values["no_driving_instruction_given"]:
        problems["no_driving_instruction_given"] = (
            "Give the instruction: no driving until the next day after sleep."
        )
    if rule["prescriber_decision_required"] and not values.get("prescriber_decision", "").strip():
        problems["prescriber_decision"] = "Record the prescriber's discharge decision."
    return problems


def session_discharge(
    *, session: TreatmentSession, signer: User, password: str, **values: Any
) -> TreatmentSession:
    """The close gate, the criteria, the signature ('discharged'), then the lock (§G4, §M9)."""
    allowed = [Role.ANESTHESIOLOGIST, Role.PSYCHIATRIST]
    if session.rules.discharge.get("nurse_may_discharge"):
        allowed.append(Role.NURSE)
    if not _on_site_clinician(signer, session, *allowed):
        raise PermissionDenied("You may not sign this discharge.")
    signatures.check_password_for_signing(signer=signer, password=password, record=session)
    with transaction.atomic():
        session = _locked_session(session)
        if session.status != TreatmentSession.Status.MONITORING:
            raise ValidationError("Only a session in monitoring can be discharged.")
        now = timezone.now()
        failing = [c for c in gates.close_gate(session, at=now) if not c.met]
        if failing:
            raise ValidationError(
                CLOSE_GATE.format(
                    conditions="; ".join(
                        f"{c.label} — {c.detail}" if c.detail else c.label for c in failing
                    )
                ),
                code="gate",
            )
        problems = discharge_criteria_problems(session, values)
        if problems:
            raise ValidationError(problems)
        for check in session.checks.filter(
            satisfied_at__isnull=True, due_at__isnull=True, excused_reason=""
        ):
            check.satisfied_at = now
            attribute(check, acting_user=signer, reason="Met before discharge")
            check.save(update_fields=["satisfied_at"])
        discharge = Discharge(session=session, discharged_by=signer, **values)
        discharge.full_clean()
        attribute(discharge, acting_user=signer, reason="Discharge criteria recorded")
        discharge.save()
        signature = signatures.record_signature(
            record=session, signer=signer, meaning=Signature.Meaning.DISCHARGED
        )
        session.status = TreatmentSession.Status.DISCHARGED
        session.discharged_at = signature.signed_at
        session.locked_at = signature.signed_at
        attribute(session, acting_user=signer, reason="Discharged and signed")
        session.save(update_fields=["status", "discharged_at", "locked_at"])
        followup_services.plan_after_discharge(session=session, acting_user=signer)
        return session
