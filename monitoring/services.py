"""Writes for Step 2 (SPEC §M). Every write locks the session row, so concurrent chairside
entries serialize instead of losing each other."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
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
from monitoring.evaluation import evaluate_reading, met_at, plan_checks, plausibility_problems
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
from monitoring.permissions import may_sign_discharge
from protocols.models import TreatmentCourse
from protocols.plausibility import NOT_A_WHOLE_NUMBER, whole_number
from protocols.rules import VITAL_FIELDS

SESSION_NOT_ACTIVE = "This session is not in progress."
MEASURED_IN_FUTURE = "The measurement time cannot be in the future."
MEASURED_BEFORE_CHECK_IN = "The measurement time cannot be before check-in."
NO_VALUES = "Enter at least one measurement."
GATE_CLOSED = "Dosing cannot start: {conditions}."
CLOSE_GATE = "Discharge refused: {conditions}."
WITNESS_SAME_PERSON = "The witness must be a different person."
WRONG_WITNESS_PASSWORD = "The witness's password is not correct."  # noqa: S105
FUTURE_TOLERANCE = timedelta(minutes=1)
WEIGHT_OUTSIDE_LIMITS = (
    "The patient's recorded weight ({weight} kg) is outside this protocol's limits "
    "({low}–{high} kg): check and correct the weight before dosing."
)
NO_PREDOSE_BP = "Record a pre-dose blood pressure, measured before the first device."
DEVICES_TOO_CLOSE = (
    "{devices} devices at least {interval} min apart: the last device cannot be before {earliest}."
)
NO_RAISED_PREDOSE = "No raised pre-dose reading or critical pre-dose alert needs a decision."


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
    """The prescriber's proceed / defer on a raised pre-dose reading (SPEC §M5).

    The decision is bound to the reading it was made on (the latest raised pre-dose reading);
    it also acknowledges the open critical pre-dose alerts, which the prescriber has now seen.
    """
    session = _locked_session(session)
    if not _on_site_clinician(acting_user, session, Role.PSYCHIATRIST):
        raise PermissionDenied("Only the prescriber (a psychiatrist of the site) decides.")
    if session.status != TreatmentSession.Status.CHECKED_IN:
        raise ValidationError("The decision is taken before dosing.")
    if decision not in TreatmentSession.PredoseDecision.values:
        raise ValidationError({"decision": "Choose proceed or defer."})
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason for the decision."})
    raised = gates.raised_predose(session)
    critical = session.alerts.filter(
        level=Alert.Level.CRITICAL, acknowledged_at__isnull=True, reading__is_predose=True
    ).select_related("reading")
    candidates = [raised.reading] if raised else []
    candidates += [a.reading for a in critical]
    if not candidates:
        raise ValidationError(NO_RAISED_PREDOSE)
    reading = max(candidates, key=lambda r: (r.measured_at, r.pk))
    now = timezone.now()
    session.predose_decision = decision
    session.predose_decision_reason = reason.strip()
    session.predose_decision_by = acting_user
    session.predose_decision_at = now
    session.predose_decision_reading = reading
    attribute(
        session,
        acting_user=acting_user,
        reason=f"Pre-dose decision: {decision} (reading of "
        f"{timezone.localtime(reading.measured_at):%H:%M})",
    )
    session.save(
        update_fields=[
            "predose_decision",
            "predose_decision_reason",
            "predose_decision_by",
            "predose_decision_at",
            "predose_decision_reading",
        ]
    )
    for alert in critical:
        _acknowledge(
            session,
            alert,
            acting_user,
            f"Prescriber's pre-dose decision: {decision} — {reason.strip()}",
            now,
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


AMOUNT_NOT_A_NUMBER = "Enter a number (e.g. 12.5)."
AMOUNT_TOO_PRECISE = "Enter at most {places} decimal(s)."


def clean_amount(value: Any, *, places: int = 2) -> Decimal | None:
    """An amount (mg, mL, °C) given to a service, as the form would take it (SPEC §N5, §M12):
    Decimal end to end — never a float's approximation, never rounded. Raises the message."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(AMOUNT_NOT_A_NUMBER)
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as error:
        raise ValueError(AMOUNT_NOT_A_NUMBER) from error
    if not amount.is_finite():
        raise ValueError(AMOUNT_NOT_A_NUMBER)
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise ValueError(AMOUNT_TOO_PRECISE.format(places=places))
    return amount


def _clean_amounts(**amounts: Any) -> dict[str, Decimal | None]:
    cleaned, errors = {}, {}
    for name, value in amounts.items():
        try:
            cleaned[name] = clean_amount(value)
        except ValueError as error:
            errors[name] = str(error)
    if errors:
        raise ValidationError(errors)
    return cleaned


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
    amounts = _clean_amounts(dose_mg=dose_mg, volume_ml=volume_ml)
    dose_mg, volume_ml = amounts["dose_mg"], amounts["volume_ml"]
    if dose_mg is None or volume_ml is None:
        raise ValidationError(
            {
                name: "Enter the dose in mg." if name == "dose_mg" else "Enter the volume in mL."
                for name, value in amounts.items()
                if value is None
            }
        )
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
        weight_limit = rules.plausibility.get("weight_kg")
        if weight is not None and weight_limit is not None and not weight_limit.contains(weight):
            errors["dose_mg"] = WEIGHT_OUTSIDE_LIMITS.format(
                weight=weight, low=weight_limit.low, high=weight_limit.high
            )
        if (
            route == "intranasal"
            and not session.vitals.filter(
                entered_in_error_at__isnull=True,
                is_predose=True,
                sbp__isnull=False,
                dbp__isnull=False,
                measured_at__lt=started_at,
            ).exists()
        ):
            # Esketamine label / REMS: blood pressure is assessed before dosing.
            errors["started_at"] = NO_PREDOSE_BP
        if route == "iv":
            max_age = timedelta(days=dose["weight_max_age_days"])
            measured = patient.weight_measured_on
            if "dose_mg" in errors:
                pass
            elif weight is None or measured is None or timezone.localdate(now) - measured > max_age:
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
        _sync_checks(session, acting_user, now=now)
        return record


@transaction.atomic
def dose_complete(*, session: TreatmentSession, acting_user: User, ended_at: datetime) -> None:
    """Infusion ended (IV) or last device given (intranasal): monitoring continues, and the
    check schedule is re-planned from the actual end (SPEC §M6)."""
    session = _locked_session(session)
    if session.status != TreatmentSession.Status.DOSING:
        raise ValidationError("The dose is not running.")
    if ended_at < session.dose_started_at or ended_at > timezone.now() + FUTURE_TOLERANCE:
        raise ValidationError({"ended_at": "The end must be between the start and now."})
    dose = session.doses.order_by("-id").first()
    interval = session.rules.dose.get("device_interval_minutes")
    if dose.devices and dose.devices > 1 and interval:
        # SPEC §M2 / label: one device every `interval` minutes.
        earliest = dose.started_at + timedelta(minutes=interval * (dose.devices - 1))
        if ended_at < earliest:
            raise ValidationError(
                {
                    "ended_at": DEVICES_TOO_CLOSE.format(
                        devices=dose.devices,
                        interval=interval,
                        earliest=f"{timezone.localtime(earliest):%H:%M}",
                    )
                }
            )
    dose.ended_at = ended_at
    attribute(dose, acting_user=acting_user, reason="Dose completed")
    dose.save(update_fields=["ended_at"])
    session.status = TreatmentSession.Status.MONITORING
    session.dose_ended_at = ended_at
    attribute(session, acting_user=acting_user, reason="Dose completed, monitoring")
    session.save(update_fields=["status", "dose_ended_at"])
    _sync_checks(
        session,
        acting_user,
        now=timezone.now(),
        replan_reason=f"Re-planned from the actual end ({timezone.localtime(ended_at):%H:%M})",
    )
    _satisfy_checks(session, acting_user)


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
    amount_mg = _clean_amounts(amount_mg=amount_mg)["amount_mg"]
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


INTEGER_FIELDS = ("sbp", "dbp", "hr", "rr", "spo2", "moaas")
TEMPERATURE_PRECISION = "Enter the temperature with at most one decimal (e.g. 36.8)."


def clean_vital_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Validate vital values given to a service as a form would (SPEC §N5): a non-integer
    SBP, DBP, HR, RR, SpO2 or MOAA/S is refused with a field error, never truncated."""
    cleaned: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in VITAL_FIELDS:
        value = values.get(field)
        if value is None or value == "":
            cleaned[field] = None
        elif field in INTEGER_FIELDS:
            number = whole_number(value)
            if number is None:
                errors[field] = NOT_A_WHOLE_NUMBER
            else:
                cleaned[field] = number
        else:
            try:
                temperature = clean_amount(value, places=1)
            except ValueError:
                errors[field] = TEMPERATURE_PRECISION
            else:
                cleaned[field] = temperature
    return cleaned, errors


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
    values, errors = clean_vital_values(values)
    errors.update(
        {
            field: message
            for field, message in plausibility_problems(
                session.rules, {f: v for f, v in values.items() if f not in errors}
            ).items()
            if field not in errors
        }
    )
    if measured_at > now + FUTURE_TOLERANCE:
        errors["measured_at"] = MEASURED_IN_FUTURE
    elif measured_at < session.checked_in_at:
        errors["measured_at"] = MEASURED_BEFORE_CHECK_IN
    if not errors and all(values.get(f) is None for f in VITAL_FIELDS):
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
    # SPEC §M5: every saved reading is evaluated, pre-dose ones included.
    _raise_alerts(session, reading)
    _sync_checks(session, acting_user, now=now)
    _satisfy_checks(session, acting_user)
    return reading


def _raise_alerts(session: TreatmentSession, reading: VitalReading) -> list[Alert]:
    rules = session.rules
    valid = session.vitals.filter(entered_in_error_at__isnull=True).exclude(pk=reading.pk)
    # The baseline is pre-dose; a pre-dose reading is not compared with itself or its peers.
    baseline = None if reading.is_predose else gates.predose_baseline(session)
    # Consecutive readings on either side: a back-dated reading can complete a two-readings
    # rule too (SPEC §M3). The widest persistence window of the protocol bounds the search.
    widest = max((r.persistence_window_minutes or 0 for r in rules.alerts), default=0)
    span = timedelta(minutes=widest)
    earlier = valid.filter(
        measured_at__gte=reading.measured_at - span,
        measured_at__lte=reading.measured_at + span,
    )
    # Consecutive means no valid reading of the field in between: load the immediate
    # neighbours whatever their distance, so a reading outside the window still breaks a run.
    neighbours = list(earlier)
    for field in {r.field for r in rules.alerts if r.persistence_window_minutes is not None}:
        holding = valid.filter(**{f"{field}__isnull": False})
        before = (
            holding.filter(measured_at__lte=reading.measured_at)
            .order_by("-measured_at", "-id")
            .first()
        )
        after = (
            holding.filter(measured_at__gte=reading.measured_at)
            .order_by("measured_at", "id")
            .first()
        )
        neighbours += [r for r in (before, after) if r is not None]
    alerts = []
    repeat_minutes = []
    for raised in evaluate_reading(
        rules=rules.alerts, reading=reading, baseline=baseline, earlier=neighbours
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
        if raised.level == Alert.Level.WARNING and raised.repeat_check_minutes:
            repeat_minutes.append(raised.repeat_check_minutes)
        if raised.level == Alert.Level.CRITICAL:
            notify(
                recipient=session.supervising_clinician,
                kind=Notification.Kind.CRITICAL_ALERT,
                title=f"Critical alert in chair {session.chair}: acknowledge it",
                url=_session_url(session),
            )
    if repeat_minutes:
        _plan_repeat_check(session, reading, min(repeat_minutes), reading.entered_by)
    return alerts


def _plan_repeat_check(
    session: TreatmentSession, reading: VitalReading, minutes: int, acting_user: User
) -> RequiredCheck:
    """SPEC §M5: a warning that asks for a repeat reading creates a timed required check,
    met by a reading of the same measurements taken after this one, within `minutes`."""
    measures = ["sbp", "dbp"] if reading.sbp is not None and reading.dbp is not None else []
    measures = measures or [f for f in ("sbp", "dbp") if getattr(reading, f) is not None]
    due_at = reading.measured_at + timedelta(minutes=minutes)
    check = RequiredCheck(
        session=session,
        code=f"repeat-{reading.pk}",
        label=f"Repeat BP within {minutes} min (reading of "
        f"{timezone.localtime(reading.measured_at):%H:%M})",
        measures=measures,
        due_at=due_at,
        window_minutes=0,
        window_before_minutes=minutes,
        overdue_at=due_at,
        after_reading=reading,
    )
    attribute(check, acting_user=acting_user, reason="Repeat reading requested by a warning")
    check.save()
    return check


def _evidence(session: TreatmentSession) -> tuple[list[VitalReading], list[Observation]]:
    readings = list(session.vitals.filter(entered_in_error_at__isnull=True))
    cadss = list(session.observations.filter(kind="cadss", cadss_total__isnull=False))
    return readings, cadss


def _met_at(check: RequiredCheck, readings, cadss) -> datetime | None:
    return met_at(check, readings, cadss, after=check.after_reading)


def _satisfy_checks(session: TreatmentSession, acting_user: User) -> None:
    """Mark due checks met by a valid reading (or CADSS) inside their window, and re-open a
    check whose only evidence was marked entered in error (SPEC §M6, §M8)."""
    readings, cadss = _evidence(session)
    checks = (
        session.checks.required()
        .filter(due_at__isnull=False, excused_reason="")
        .select_related("after_reading")
    )
    for check in checks:
        met_at = _met_at(check, readings, cadss)
        if met_at == check.satisfied_at:
            continue
        reason = (
            "Recorded in window"
            if met_at is not None and check.satisfied_at is None
            else "Evidence changed"
            if met_at is not None
            else "Open again: its reading was marked entered in error"
        )
        check.satisfied_at = met_at
        attribute(check, acting_user=acting_user, reason=reason)
        check.save(update_fields=["satisfied_at"])


def _plan_key(code: str, due_at: datetime | None) -> tuple:
    return (code, due_at.astimezone(UTC) if due_at else None)


def _sync_checks(
    session: TreatmentSession,
    acting_user: User,
    *,
    now: datetime,
    final: datetime | None = None,
    replan_reason: str = "",
) -> None:
    """Keep the schedule's checks in line with what happened (SPEC §M6).

    Adds the occurrences that have become due (recovery checks run until discharge, "during"
    checks run as long as the infusion does). With `replan_reason` (the infusion end was
    recorded) or `final` (the discharge time), an open check the plan no longer holds is
    withdrawn — kept, with the reason, never deleted.
    """
    if session.dose_started_at is None:
        return
    rules = session.rules
    started, ended = session.dose_started_at, session.dose_ended_at
    steps = [c.repeat_every_minutes for c in rules.schedule if c.repeat_every_minutes]
    lookahead = timedelta(minutes=max(steps, default=0))
    until = final if final is not None else now + lookahead
    plan = plan_checks(rules, dose_started_at=started, dose_ended_at=ended, until=until)
    infusion_minutes = rules.dose.get("infusion_minutes")
    if ended is None and infusion_minutes:
        planned_end = started + timedelta(minutes=infusion_minutes)
        if now + lookahead > planned_end:
            # The infusion runs past its planned end: its "during" checks run on with it.
            running = plan_checks(
                rules, dose_started_at=started, dose_ended_at=now + lookahead, until=until
            )
            plan += [p for p in running if p.repeat_until == "infusion_end"]
    if final is not None:
        plan = [p for p in plan if p.due_at is None or p.due_at <= final]
    wanted = {_plan_key(p.code, p.due_at): p for p in plan}
    existing = list(session.checks.filter(after_reading__isnull=True, voided_at__isnull=True))
    if replan_reason or final is not None:
        for check in existing:
            if check.is_done or _plan_key(check.code, check.due_at) in wanted:
                continue
            check.voided_at = now
            check.void_reason = replan_reason or "Not due before the discharge"
            attribute(check, acting_user=acting_user, reason=f"Withdrawn: {check.void_reason}")
            check.save(update_fields=["voided_at", "void_reason"])
    have = {_plan_key(c.code, c.due_at) for c in existing}
    readings, cadss = _evidence(session)
    for key, planned in wanted.items():
        if key in have:
            continue
        check = RequiredCheck(
            session=session,
            code=planned.code,
            label=planned.label,
            measures=list(planned.measures),
            due_at=planned.due_at,
            window_minutes=planned.window_minutes,
            window_before_minutes=planned.window_before_minutes,
            before_dose=planned.before_dose,
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
    # A check met only by this reading is open again (SPEC §M6).
    _satisfy_checks(session, acting_user)
    return reading


def _acknowledge(
    session: TreatmentSession, alert: Alert, acting_user: User, action_taken: str, at: datetime
) -> Alert:
    alert.acknowledged_at = at
    alert.acknowledged_by = acting_user
    alert.action_taken = action_taken
    attribute(alert, acting_user=acting_user, reason="Acknowledged")
    alert.save(update_fields=["acknowledged_at", "acknowledged_by", "action_taken"])
    if not session.alerts.filter(level=Alert.Level.CRITICAL, acknowledged_at__isnull=True).exists():
        # Every critical alert of the session is handled: its notices are done with.
        Notification.objects.filter(
            url=_session_url(session),
            kind=Notification.Kind.CRITICAL_ALERT,
            read_at__isnull=True,
        ).update(read_at=at)
    return alert


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
    return _acknowledge(session, alert, acting_user, action_taken.strip(), timezone.now())


@transaction.atomic
def check_excuse(*, check: RequiredCheck, acting_user: User, reason: str) -> RequiredCheck:
    """A missed check needs a reason: a recorded protocol deviation (SPEC §M6)."""
    _locked_session(check.session)
    check = RequiredCheck.objects.select_for_update().get(pk=check.pk)
    if check.is_done:
        raise ValidationError("This check is already done or excused.")
    if not check.is_required:
        raise ValidationError("This check was withdrawn by a re-plan: nothing to excuse.")
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
    _sync_checks(session, acting_user, now=timezone.now())
    _satisfy_checks(session, acting_user)
    return observation


# --- Discharge ------------------------------------------------------------------------------


DISCHARGE_SCORES = {
    "aldrete_activity": 2,
    "aldrete_respiration": 2,
    "aldrete_circulation": 2,
    "aldrete_consciousness": 2,
    "aldrete_spo2": 2,
    "moaas": 5,
}
DISCHARGE_FLAGS = ("escort_present", "no_driving_instruction_given")
SCORE_REQUIRED = "Choose a score from 0 to {high}."


def clean_discharge_values(values: dict[str, Any]) -> dict[str, Any]:
    """The discharge criteria given to the service, validated as the form does (SPEC §N5):
    each score a whole number in its range, each confirmation a yes or no."""
    cleaned, errors = dict(values), {}
    for name, high in DISCHARGE_SCORES.items():
        number = whole_number(values.get(name))
        if number is None or not 0 <= number <= high:
            errors[name] = SCORE_REQUIRED.format(high=high)
        else:
            cleaned[name] = number
    for name in DISCHARGE_FLAGS:
        if not isinstance(values.get(name, False), bool):
            errors[name] = "Answer yes or no."
        cleaned[name] = bool(values.get(name, False))
    for name in ("prescriber_decision", "notes"):
        cleaned[name] = str(values.get(name) or "")
    if errors:
        raise ValidationError(errors)
    return cleaned


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


ALDRETE_ITEMS = (
    "aldrete_activity",
    "aldrete_respiration",
    "aldrete_circulation",
    "aldrete_consciousness",
    "aldrete_spo2",
)
DISAGREEMENT_REASON_REQUIRED = (
    "{what}: the record says {supported} ({evidence}). Correct the entry, or give a written "
    "reason for the difference."
)


@dataclass(frozen=True)
class Disagreement:
    """An entered discharge criterion that the recorded data does not support (SPEC §M9)."""

    item: str
    label: str
    entered: int
    supported: int | None
    evidence: str

    def as_dict(self) -> dict:
        return {
            "item": self.item,
            "entered": self.entered,
            "supported": self.supported,
            "evidence": self.evidence,
        }


def _latest_valid(session: TreatmentSession, field: str) -> VitalReading | None:
    return (
        session.vitals.filter(entered_in_error_at__isnull=True, **{f"{field}__isnull": False})
        .order_by("-measured_at", "-id")
        .first()
    )


def _at(reading: VitalReading) -> str:
    return f"{timezone.localtime(reading.measured_at):%H:%M}"


def discharge_disagreements(session: TreatmentSession, values: dict) -> list[Disagreement]:
    """Criteria entered at discharge checked against the latest valid readings (SPEC §M9):
    the Aldrete SpO2, consciousness and circulation items and the MOAA/S must agree with what
    was recorded. An item with no reading to compare (e.g. no MOAA/S charted) is the
    clinician's own observation at discharge and stands as entered."""
    rule = session.rules.discharge
    found: list[Disagreement] = []

    def compare(item: str, label: str, supported: int, evidence: str) -> None:
        if values[item] != supported:
            found.append(Disagreement(item, label, values[item], supported, evidence))

    spo2 = _latest_valid(session, "spo2")
    if spo2 is not None:
        supported = (
            2
            if spo2.spo2 > rule["aldrete_spo2_two_points_above"]
            else 1
            if spo2.spo2 >= rule["aldrete_spo2_one_point_from"]
            else 0
        )
        compare("aldrete_spo2", "Aldrete SpO2", supported, f"SpO2 {spo2.spo2} % at {_at(spo2)}")

    moaas = _latest_valid(session, "moaas")
    if moaas is not None:
        evidence = f"MOAA/S {moaas.moaas} at {_at(moaas)}"
        supported = (
            2
            if moaas.moaas >= rule["aldrete_moaas_two_points"]
            else 1
            if moaas.moaas >= rule["aldrete_moaas_one_point_from"]
            else 0
        )
        compare("aldrete_consciousness", "Aldrete consciousness", supported, evidence)
        compare("moaas", "MOAA/S", moaas.moaas, evidence)

    baseline = gates.predose_baseline(session).sbp
    latest = (
        session.vitals.filter(entered_in_error_at__isnull=True, is_predose=False, sbp__isnull=False)
        .order_by("-measured_at", "-id")
        .first()
    )
    if baseline is not None and latest is not None:
        change = abs(Decimal(latest.sbp) - Decimal(baseline)) * 100 / Decimal(baseline)
        supported = (
            2
            if change <= rule["aldrete_bp_two_points_within_percent"]
            else 1
            if change < rule["aldrete_bp_one_point_within_percent"]
            else 0
        )
        evidence = f"SBP {latest.sbp} at {_at(latest)} against a pre-dose {baseline}"
        compare("aldrete_circulation", "Aldrete circulation", supported, evidence)
    return found


def session_discharge(
    *,
    session: TreatmentSession,
    signer: User,
    password: str,
    disagreement_reason: str = "",
    **values: Any,
) -> TreatmentSession:
    """The close gate, the criteria, the signature ('discharged'), then the lock (§G4, §M9)."""
    if not may_sign_discharge(signer, session):
        raise PermissionDenied("You may not sign this discharge.")
    values = clean_discharge_values(values)
    signatures.check_password_for_signing(signer=signer, password=password, record=session)
    with transaction.atomic():
        session = _locked_session(session)
        if session.status != TreatmentSession.Status.MONITORING:
            raise ValidationError("Only a session in monitoring can be discharged.")
        now = timezone.now()
        # Recovery checks run until discharge: those due by now are required, later ones not.
        _sync_checks(session, signer, now=now, final=now)
        _satisfy_checks(session, signer)
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
        disagreements = discharge_disagreements(session, values)
        disagreement_reason = (disagreement_reason or "").strip()
        if disagreements and not disagreement_reason:
            raise ValidationError(
                {
                    "disagreement_reason": [
                        DISAGREEMENT_REASON_REQUIRED.format(
                            what=d.label,
                            supported=f"{d.supported}, not {d.entered}",
                            evidence=d.evidence,
                        )
                        for d in disagreements
                    ]
                }
            )
        for check in session.checks.required().filter(
            satisfied_at__isnull=True, due_at__isnull=True, excused_reason=""
        ):
            check.satisfied_at = now
            attribute(check, acting_user=signer, reason="Met before discharge")
            check.save(update_fields=["satisfied_at"])
        discharge = Discharge(
            session=session,
            discharged_by=signer,
            disagreements=[d.as_dict() for d in disagreements],
            disagreement_reason=disagreement_reason if disagreements else "",
            **values,
        )
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
