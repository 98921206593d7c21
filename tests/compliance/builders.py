"""Rows for the compliance tests, written with explicit times.

The dashboard only reads, so most violations are built directly (a discharged session with too
short an observation cannot be made through the services, which refuse it: that is the point).
Rows are saved one by one, like the services do, so history and the audit chain follow; a
session's children are written before it is locked, as in real life.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.contrib.contenttypes.models import ContentType

from clinic.models import Signature, Site, User
from followups.models import FollowUp
from monitoring.models import (
    Alert,
    Discharge,
    Incident,
    RequiredCheck,
    TreatmentSession,
    VitalReading,
)
from patients.models import ConsentRecord, ConsentTemplate, Patient
from protocols.models import Assessment, ProtocolVersion, TreatmentCourse
from tests.factories import ConsentRecordFactory

NORMAL = {"sbp": 125, "dbp": 80, "hr": 70, "rr": 14, "spo2": 98, "moaas": 5}
CRITICAL_SPO2 = {**NORMAL, "spo2": 85}


def at(day: int, hour: int = 10, minute: int = 0, month: int = 3, year: int = 2025) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def course(
    patient: Patient, version: ProtocolVersion, *, psychiatrist: User, nurse: User
) -> TreatmentCourse:
    return TreatmentCourse.objects.create(
        patient=patient,
        protocol_version=version,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=psychiatrist,
        planned_sessions=6,
        status=TreatmentCourse.Status.ACTIVE,
        created_by=nurse,
    )


def sign_assessment(
    course: TreatmentCourse, when: datetime, *, psychiatrist: User, nurse: User, approve=True
) -> Assessment:
    """A signed assessment and its signature ('approved' or 'declined') at `when`."""
    status = Assessment.Status.APPROVED if approve else Assessment.Status.NOT_APPROVED
    assessment = Assessment.objects.create(
        course=course,
        patient=course.patient,
        status=status,
        signed_at=when,
        locked_at=when,
        created_by=nurse,
    )
    Signature.objects.create(
        content_type=ContentType.objects.get_for_model(Assessment),
        object_id=assessment.pk,
        signer=psychiatrist,
        printed_name=psychiatrist.printed_name,
        signed_at=when,
        meaning=Signature.Meaning.APPROVED if approve else Signature.Meaning.DECLINED,
        content_sha256="0" * 64,
    )
    return assessment


def consent(
    patient: Patient,
    template: ConsentTemplate,
    signed_at: datetime,
    *,
    witness: User,
    valid_until: date | None = None,
    withdrawn_at: datetime | None = None,
) -> ConsentRecord:
    extra: dict[str, Any] = {}
    if valid_until is not None:
        extra["valid_until"] = valid_until
    if withdrawn_at is not None:
        extra.update(
            withdrawn_at=withdrawn_at, withdrawn_by=witness, withdrawal_reason="Changed her mind"
        )
    return ConsentRecordFactory(
        patient=patient, template=template, signed_at=signed_at, witness=witness, **extra
    )


class SessionBuilder:
    """A dosed session; add children, then `discharge()` or `abort()` (which lock or end it)."""

    def __init__(
        self,
        course: TreatmentCourse,
        dose_at: datetime,
        *,
        supervisor: User,
        nurse: User,
        site: Site | None = None,
        dose_minutes: int | None = 40,
    ) -> None:
        self.nurse, self.supervisor = nurse, supervisor
        self.session = TreatmentSession.objects.create(
            course=course,
            patient=course.patient,
            site=site or course.patient.home_site,
            status=TreatmentSession.Status.MONITORING,
            scheduled_at=dose_at - timedelta(minutes=30),
            chair="1",
            supervising_clinician=supervisor,
            escort_confirmed=True,
            escort_details="Partner",
            checked_in_at=dose_at - timedelta(minutes=20),
            checked_in_by=nurse,
            dose_started_at=dose_at,
            dose_ended_at=dose_at + timedelta(minutes=dose_minutes) if dose_minutes else None,
            created_by=nurse,
        )

    @property
    def dose_at(self) -> datetime:
        return self.session.dose_started_at

    def reading(self, minute: int, *, entered_after: int = 0, **values) -> VitalReading:
        measured = self.dose_at + timedelta(minutes=minute)
        return VitalReading.objects.create(
            session=self.session,
            measured_at=measured,
            entered_at=measured + timedelta(minutes=entered_after),
            entered_by=self.nurse,
            **(values or NORMAL),
        )

    def alert(
        self, minute: int, *, acknowledged_after: int | None, level=Alert.Level.CRITICAL
    ) -> Alert:
        reading = self.reading(minute, **CRITICAL_SPO2)
        acknowledged = (
            reading.entered_at + timedelta(minutes=acknowledged_after)
            if acknowledged_after is not None
            else None
        )
        return Alert.objects.create(
            session=self.session,
            reading=reading,
            level=level,
            field="spo2",
            message="SpO2 below 90 %.",
            raised_at=reading.entered_at,
            acknowledged_at=acknowledged,
            acknowledged_by=self.supervisor if acknowledged else None,
            action_taken="Oxygen given" if acknowledged else "",
        )

    def check(
        self,
        minute: int,
        *,
        window: int = 5,
        satisfied_minute: int | None = None,
        excused: str = "",
    ) -> RequiredCheck:
        due = self.dose_at + timedelta(minutes=minute)
        return RequiredCheck.objects.create(
            session=self.session,
            code=f"vitals-{minute}",
            label=f"Vitals at {minute} min",
            measures=["sbp", "dbp", "hr", "rr", "spo2"],
            due_at=due,
            window_minutes=window,
            window_before_minutes=window,
            overdue_at=due + timedelta(minutes=window),
            satisfied_at=self.dose_at + timedelta(minutes=satisfied_minute)
            if satisfied_minute is not None
            else None,
            excused_reason=excused,
            excused_by=self.nurse if excused else None,
        )

    def discharge(self, minute: int, **criteria) -> TreatmentSession:
        values = {
            "aldrete_activity": 2,
            "aldrete_respiration": 2,
            "aldrete_circulation": 2,
            "aldrete_consciousness": 2,
            "aldrete_spo2": 2,
            "moaas": 5,
            "escort_present": True,
            "no_driving_instruction_given": True,
            "prescriber_decision": "Fit to leave",
            **criteria,
        }
        Discharge.objects.create(session=self.session, discharged_by=self.supervisor, **values)
        when = self.dose_at + timedelta(minutes=minute)
        session = self.session
        session.status = TreatmentSession.Status.DISCHARGED
        session.discharged_at = session.locked_at = when
        session.save(update_fields=["status", "discharged_at", "locked_at"])
        return session

    def abort(self, minute: int) -> TreatmentSession:
        session = self.session
        session.status = TreatmentSession.Status.ABORTED
        session.aborted_at = self.dose_at + timedelta(minutes=minute)
        session.abort_reason = "Patient unwell"
        session.save(update_fields=["status", "aborted_at", "abort_reason"])
        return session


def followup(
    *,
    site: Site,
    due_at: datetime,
    window_hours: int = 24,
    patient: Patient | None = None,
    session: TreatmentSession | None = None,
    code: str = "next_day_call",
    label: str = "Next-day safety call",
    role: str = "Nurse",
    completed_at: datetime | None = None,
    completed_by: User | None = None,
    state: str | None = None,
    reason: str = "",
) -> FollowUp:
    if state is None:
        state = FollowUp.State.COMPLETED if completed_at else FollowUp.State.OPEN
    return FollowUp.objects.create(
        site=site,
        patient=patient or (session.patient if session else None),
        course=session.course if session else None,
        session=session,
        code=code,
        label=label,
        due_at=due_at,
        window_ends_at=due_at + timedelta(hours=window_hours),
        assigned_role=role,
        state=state,
        state_reason=reason,
        completed_at=completed_at,
        completed_by=completed_by,
        outcome="Done" if completed_at else "",
    )


def rems_form(
    session: TreatmentSession, *, completed_at: datetime | None, administrator: User
) -> FollowUp:
    """The REMS monitoring form duty of an esketamine session, from its version's rule."""
    (rule,) = [r for r in session.course.protocol_version.parsed.followups if r.code == "rems_form"]
    start = session.discharged_at + timedelta(hours=rule.offset_hours)
    return followup(
        site=session.site,
        session=session,
        due_at=start,
        window_hours=rule.window_hours,
        code=rule.code,
        label=rule.label,
        role=rule.role,
        completed_at=completed_at,
        completed_by=administrator if completed_at else None,
    )


def incident(site: Site, opened_at: datetime, *, by: User) -> Incident:
    return Incident.objects.create(
        site=site,
        kind=Incident.Kind.CS_DISCREPANCY,
        description="Balance below zero",
        opened_at=opened_at,
        opened_by=by,
    )
