"""Helpers for the Step 3 tests: the plan a protocol version prescribes, a session run to its
discharge, follow-up rows for read-side tests, and writers on their own connections."""

from __future__ import annotations

import threading
import zoneinfo
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import connections
from django.utils import timezone

from clinic.models import Notification, Role, User
from followups import services as followup_services
from followups.models import REMS_FORM_CODE, FollowUp, Reminder
from followups.services import course_start_at
from monitoring import gates
from monitoring import services as monitoring_services
from monitoring.models import DrugLot, TreatmentSession
from protocols.models import TreatmentCourse
from protocols.rules import FollowUpRule, ProtocolRules

NORMAL_VITALS = {"sbp": 125, "dbp": 80, "hr": 70, "rr": 14, "spo2": 98, "moaas": 5}
ALDRETE = (
    "aldrete_activity",
    "aldrete_respiration",
    "aldrete_circulation",
    "aldrete_consciousness",
    "aldrete_spo2",
)
ALDRETE_ITEM_MAX = 2
WAIT = 30  # seconds: a bound for a stuck thread, never reached when all is well

# --- The plan of a protocol version ----------------------------------------------------------


def rule_of(rules: ProtocolRules, followup: FollowUp) -> FollowUpRule:
    """The rule a follow-up was planned from: its code, or its code plus an occurrence suffix."""
    (rule,) = [
        r for r in rules.followups if followup.code == r.code or followup.code.startswith(r.code)
    ]
    return rule


def rules_where(rules: ProtocolRules, **wanted: Any) -> list[FollowUpRule]:
    return [r for r in rules.followups if all(getattr(r, k) == v for k, v in wanted.items())]


def occurrences(rule: FollowUpRule) -> int:
    return rule.repeat_count if rule.repeat_every_days else 1


def assert_plan(
    followups: list[FollowUp],
    *,
    rules: ProtocolRules,
    course: TreatmentCourse,
    start: datetime,
    on_completion: bool = False,
) -> None:
    """`followups` are exactly the follow-ups `rules` prescribe from `start`, field by field.

    Rules anchored at the course start (SPEC §F1a) count from the course start instead (the
    first dose, or the course's creation before any dose): `course_start_at`.
    """
    wanted = [r for r in rules.followups if r.on_course_completion == on_completion]
    assert len(followups) == sum(occurrences(r) for r in wanted)
    assert len({f.code for f in followups}) == len(followups)
    for rule in rules.followups:
        rows = sorted(
            (f for f in followups if rule_of(rules, f) == rule), key=lambda f: (f.due_at, f.pk)
        )
        if rule not in wanted:
            assert rows == [], f"{rule.code} is planned on course completion only"
            continue
        assert len(rows) == occurrences(rule), rule.code
        from_course_start = rule.anchor == "course_start"
        rule_start = (course_start_at(course) if from_course_start else start).astimezone(UTC)
        first_due = rule_start + timedelta(hours=rule.offset_hours)
        for n, row in enumerate(rows):
            due = first_due + timedelta(days=(rule.repeat_every_days or 0) * n)
            assert row.due_at == due, rule.code
            if rule.code == REMS_FORM_CODE:
                window_ends = rule_start + timedelta(days=rules.rems_form_due_days)
            else:
                window_ends = due + timedelta(hours=rule.window_hours)
            assert row.window_ends_at == window_ends, rule.code
            assert row.anchor == (
                FollowUp.Anchor.COURSE_START
                if from_course_start
                else FollowUp.Anchor.COURSE_COMPLETION
                if on_completion
                else FollowUp.Anchor.DISCHARGE
            ), rule.code
            assert row.requires_bp_in_person is rule.requires_bp_in_person, rule.code
            if rule.repeat_every_days:
                assert row.code.startswith(rule.code) and row.code != rule.code
                assert row.label.startswith(rule.label) and row.label != rule.label
            else:
                assert (row.code, row.label) == (rule.code, rule.label)
            assert row.assigned_role == rule.role
            expected_person = (
                course.responsible_psychiatrist if rule.role == Role.PSYCHIATRIST else None
            )
            assert row.assigned_to == expected_person, rule.code
            assert row.instruments == list(rule.instruments)
            assert row.signed_by_psychiatrist == rule.signed_by_psychiatrist
            assert row.escalation == list(rules.escalation)
            assert row.state == FollowUp.State.OPEN
            assert (row.site, row.patient, row.course) == (
                course.patient.home_site,
                course.patient,
                course,
            )


def open_followup(
    course: TreatmentCourse,
    rule: FollowUpRule,
    *,
    due_at: datetime,
    site=None,
    assigned_to: User | None = None,
) -> FollowUp:
    """A follow-up row as the plan makes it, without reminders (read-side tests)."""
    return FollowUp.objects.create(
        site=site or course.patient.home_site,
        patient=course.patient,
        course=course,
        code=rule.code,
        label=rule.label,
        anchor=rule.anchor,
        requires_bp_in_person=rule.requires_bp_in_person,
        due_at=due_at,
        window_ends_at=due_at + timedelta(hours=rule.window_hours),
        assigned_role=rule.role,
        assigned_to=assigned_to,
        instruments=list(rule.instruments),
        signed_by_psychiatrist=rule.signed_by_psychiatrist,
    )


def in_app(user: User, **filters: Any):
    return Notification.objects.filter(
        recipient=user, kind=Notification.Kind.FOLLOWUP_REMINDER, **filters
    )


def reminders_of(followup: FollowUp):
    return Reminder.objects.filter(followup=followup)


# --- A session run to its discharge ----------------------------------------------------------


def fresh(session: TreatmentSession) -> TreatmentSession:
    return TreatmentSession.objects.select_related("course__protocol_version", "patient").get(
        pk=session.pk
    )


def discharge_criteria(session: TreatmentSession) -> dict:
    """Discharge values meeting every criterion of the session's protocol version."""
    rule = session.rules.discharge
    return {
        **dict.fromkeys(ALDRETE, ALDRETE_ITEM_MAX),
        "moaas": rule["moaas_required"],
        "escort_present": True,
        "no_driving_instruction_given": True,
        "prescriber_decision": "Fit to leave" if rule["prescriber_decision_required"] else "",
        "ready_to_leave_minutes": None,
        "notes": "",
    }


def start_iv_session(
    course: TreatmentCourse,
    *,
    nurse: User,
    supervisor: User,
    prescriber: User,
    lot: DrugLot,
    time_machine,
) -> TreatmentSession:
    """Schedule, check in, record pre-dose vitals and start the infusion, a minute apart."""
    session = monitoring_services.session_schedule(
        course=course,
        acting_user=nurse,
        scheduled_at=timezone.now(),
        chair="2",
        supervising_clinician=supervisor,
    )
    session = monitoring_services.session_check_in(
        session=session, acting_user=nurse, escort_confirmed=True, escort_details="Partner, car"
    )
    monitoring_services.vitals_record(session=session, acting_user=nurse, **NORMAL_VITALS)
    time_machine.move_to(timezone.now() + timedelta(minutes=1), tick=False)
    patient = course.patient
    dose_mg = Decimal(patient.weight_kg) * Decimal(
        str(course.protocol_version.parsed.dose["default_mg_per_kg"])
    )
    monitoring_services.dose_record(
        session=session,
        acting_user=nurse,
        lot=lot,
        dose_mg=dose_mg,
        volume_ml=dose_mg / lot.concentration_mg_per_ml,
        started_at=timezone.now(),
        prescriber=prescriber,
    )
    return fresh(session)


def record_due_checks(session: TreatmentSession, nurse: User) -> None:
    """Every required check due by now, at its due time; the before-discharge ones now. A
    reading may re-plan the checks (SPEC §M6: until discharge): new ones are recorded too."""
    now = timezone.now()
    done: set[int] = set()
    while True:
        pending = [
            check
            for check in session.checks.order_by("due_at", "id")
            if check.pk not in done and not check.is_done and (check.due_at or now) <= now
        ]
        if not pending:
            return
        for check in pending:
            done.add(check.pk)
            _record_check(session, check, nurse, now)


def _record_check(session: TreatmentSession, check, nurse: User, now) -> None:
    check.refresh_from_db()
    at = check.due_at or now
    if not check.is_done:
        if check.measures == ["cadss"]:
            monitoring_services.observation_record(
                session=session, acting_user=nurse, kind="cadss", observed_at=at, cadss_total=3
            )
        else:
            monitoring_services.vitals_record(
                session=session, acting_user=nurse, measured_at=at, **NORMAL_VITALS
            )


def ready_for_discharge(
    session: TreatmentSession, *, nurse: User, time_machine
) -> TreatmentSession:
    """End the infusion, move the clock to the end of the minimum observation, record checks."""
    rules = session.rules
    time_machine.move_to(
        session.dose_started_at + timedelta(minutes=rules.dose["infusion_minutes"]), tick=False
    )
    monitoring_services.dose_complete(session=session, acting_user=nurse, ended_at=timezone.now())
    session = fresh(session)
    time_machine.move_to(gates.observation_ends_at(session), tick=False)
    record_due_checks(session, nurse)
    assert [c.code for c in gates.close_gate(fresh(session)) if not c.met] == []
    return fresh(session)


def discharge(session: TreatmentSession, *, signer: User, password: str) -> TreatmentSession:
    monitoring_services.session_discharge(
        session=session, signer=signer, password=password, **discharge_criteria(session)
    )
    return fresh(session)


# --- Writers on their own database connections ---------------------------------------------------


class Worker(threading.Thread):
    """Runs `work` after every worker reached the barrier; closes its connection at the end."""

    def __init__(self, name: str, work: Callable[[], Any], barrier: threading.Barrier):
        super().__init__(name=name, daemon=True)
        self.work, self.barrier = work, barrier
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.barrier.wait(timeout=WAIT)
            self.result = self.work()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            connections.close_all()


def run_together(*workers: Worker) -> None:
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=WAIT)
        assert not worker.is_alive(), f"{worker.name} is stuck"
    for worker in workers:
        if worker.error is not None:
            raise worker.error


# --- Sessions of a course, dosed and discharged at chosen times (tests/clinical) ------------------

# The 2027 clock changes of the two zones the SPEC names (§N4): (zone, local date of the change,
# how far a fixed elapsed time that crosses it moves on the wall clock).
CLOCK_CHANGES = {
    "london-spring": ("Europe/London", date(2027, 3, 28), timedelta(hours=1)),
    "london-autumn": ("Europe/London", date(2027, 10, 31), timedelta(hours=-1)),
    "new-york-spring": ("America/New_York", date(2027, 3, 14), timedelta(hours=1)),
    "new-york-autumn": ("America/New_York", date(2027, 11, 7), timedelta(hours=-1)),
}


def local(zone: str, day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), zoneinfo.ZoneInfo(zone))


def dosed(clinic, course: TreatmentCourse, *, at: datetime, time_machine) -> TreatmentSession:
    """Check in with a complete pre-dose set, then the dose started at `at`."""
    time_machine.move_to(at - timedelta(minutes=1), tick=False)
    session = clinic.checked_in(course)
    clinic.vitals(session, **NORMAL_VITALS)
    time_machine.move_to(at, tick=False)
    return clinic.dose(session, at=at)


def plan_at_discharge(
    session: TreatmentSession, *, at: datetime, signer: User, time_machine
) -> list[FollowUp]:
    """The plan the discharge signature makes at `at`: session_discharge hands the signed
    session to plan_after_discharge; here the session carries its discharge time in memory."""
    time_machine.move_to(at, tick=False)
    session.discharged_at = at
    return followup_services.plan_after_discharge(session=session, acting_user=signer)
