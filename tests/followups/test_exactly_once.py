"""One reminder is never sent twice (SPEC §F4): concurrent sweeps, and a sweep that died.

Beat sends the sweep every minute and a web request may nudge one more, so two sweeps can run at
once; a worker can die between claiming rows and sending them. The tests run the real sweep in
threads, each on its own database connection, released together by a barrier; they are
transactional (each connection must see the others' commits), with the serialized rollback and
clean database of tests/followups/conftest.py `empty_database_for_module`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection, transaction
from django.utils import timezone

from clinic.models import Notification, Role
from followups import services
from followups.models import FollowUp, Reminder
from protocols import services as protocol_services
from protocols.models import TreatmentCourse
from tests.factories import PatientFactory, UserFactory
from tests.followups.helpers import (
    Worker,
    occurrences,
    rules_where,
    run_together,
)

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("empty_database_for_module"),
]

DELIVERY = 0.02  # seconds each delivery takes: long enough for two sweeps to overlap
HOLD = 1.0  # seconds a claiming transaction stays open in the skip-locked test
SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class Delivery:
    thread: str
    reminder: int
    started: float
    ended: float


class DeliveryLog:
    """Wraps the sweep's delivery: records which thread delivered which reminder, and when."""

    def __init__(self, monkeypatch):
        self.deliveries: list[Delivery] = []
        self._guard = threading.Lock()
        deliver = services._deliver

        def logged(reminder):
            started = time.monotonic()
            time.sleep(DELIVERY)
            deliver(reminder)
            ended = time.monotonic()
            with self._guard:
                self.deliveries.append(
                    Delivery(threading.current_thread().name, reminder.pk, started, ended)
                )

        monkeypatch.setattr(services, "_deliver", logged)

    def by(self, thread: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.thread == thread]


@pytest.fixture
def due(approved_course, site, nurse, psychiatrist, time_machine) -> list[Reminder]:
    """Four nurses, three patients' next-day calls due now: 24 reminders, half of them e-mail."""
    for n in range(3):
        UserFactory(username=f"nurse-{n}", roles=[Role.NURSE], sites=[site])
    courses = [approved_course]
    for _ in range(2):
        courses.append(
            protocol_services.course_start(
                patient=PatientFactory(home_site=site, created_by=nurse),
                protocol=approved_course.protocol_version.protocol,
                acting_user=nurse,
                indication=TreatmentCourse.Indication.TRD,
                responsible_psychiatrist=psychiatrist,
                planned_sessions=4,
            )
        )
    time_machine.move_to(timezone.now(), tick=False)
    (rule,) = rules_where(approved_course.protocol_version.parsed, role=Role.NURSE)
    start = timezone.now() - timedelta(hours=rule.offset_hours)
    for course in courses:
        services.plan_from(course=course, start=start, acting_user=nurse)
    rows = list(Reminder.objects.filter(due_at__lte=timezone.now()))
    assert len(rows) == 24
    return rows


def reminder_notifications():
    return Notification.objects.filter(kind=Notification.Kind.FOLLOWUP_REMINDER)


def assert_each_sent_once(rows: list[Reminder]) -> None:
    in_app = [r for r in rows if r.channel == Reminder.Channel.IN_APP]
    email = [r for r in rows if r.channel == Reminder.Channel.EMAIL]
    assert Reminder.objects.filter(pk__in=[r.pk for r in rows], state="sent").count() == len(rows)
    assert sorted(reminder_notifications().values_list("recipient", "title")) == sorted(
        (r.recipient_id, r.title) for r in in_app
    )
    assert sorted(m.to[0] for m in mail.outbox) == sorted(r.recipient.email for r in email)


def test_two_sweeps_at_once_send_each_due_reminder_exactly_once(due, monkeypatch):
    log = DeliveryLog(monkeypatch)
    barrier = threading.Barrier(2)
    first = Worker("sweep-1", services.sweep_due_reminders, barrier)
    second = Worker("sweep-2", services.sweep_due_reminders, barrier)

    run_together(first, second)

    assert first.result["sent"] + second.result["sent"] == len(due)
    assert sorted(d.reminder for d in log.deliveries) == sorted(r.pk for r in due)
    assert_each_sent_once(due)
    assert set(Reminder.objects.values_list("attempts", flat=True).filter(state="sent")) == {1}


def test_two_sweeps_at_once_share_the_due_reminders_and_never_send_one_twice(due, monkeypatch):
    log = DeliveryLog(monkeypatch)
    half = len(due) // 2
    barrier = threading.Barrier(2)
    first = Worker("sweep-1", lambda: services.sweep_due_reminders(limit=half), barrier)
    second = Worker("sweep-2", lambda: services.sweep_due_reminders(limit=half), barrier)

    run_together(first, second)

    assert (first.result["sent"], second.result["sent"]) == (half, half)
    one, two = log.by("sweep-1"), log.by("sweep-2")
    assert not {d.reminder for d in one} & {d.reminder for d in two}
    if connection.vendor == "postgresql":
        # The two really ran side by side: each delivered while the other was delivering.
        # (SQLite has one writer at a time: there the sweeps take turns, which is also safe.)
        assert min(d.started for d in one) < max(d.ended for d in two)
        assert min(d.started for d in two) < max(d.ended for d in one)
    assert_each_sent_once(due)


def test_a_second_claim_skips_the_rows_another_sweep_holds_and_takes_the_rest(due):
    half = len(due) // 2
    now = timezone.now()
    claimed = threading.Event()

    def hold_a_claim() -> list[int]:
        # A sweep's claim, with its transaction kept open (as while it commits) for HOLD s.
        with transaction.atomic():
            rows = services._claim(now, half, "sweep-a")
            claimed.set()
            time.sleep(HOLD)
        return rows

    def claim_meanwhile() -> tuple[list[int], float]:
        assert claimed.wait(timeout=10)
        started = time.monotonic()
        rows = services._claim(now, len(due), "sweep-b")
        return rows, time.monotonic() - started

    barrier = threading.Barrier(2)
    a = Worker("sweep-a", hold_a_claim, barrier)
    b = Worker("sweep-b", claim_meanwhile, barrier)

    run_together(a, b)

    rows_b, waited = b.result
    assert len(a.result) == half
    assert set(a.result) | set(rows_b) == {r.pk for r in due}
    assert not set(a.result) & set(rows_b)
    if connection.vendor == "postgresql":
        # Row locks with SKIP LOCKED: the second claim does not queue behind the first.
        assert waited < HOLD / 2
    claims = dict(Reminder.objects.values_list("pk", "claimed_by"))
    assert {claims[pk] for pk in a.result} == {"sweep-a"}
    assert {claims[pk] for pk in rows_b} == {"sweep-b"}
    taken = Reminder.objects.filter(pk__in=[*a.result, *rows_b])
    assert set(taken.values_list("state", "attempts")) == {(Reminder.State.SENDING, 1)}


def test_a_sweep_killed_after_claiming_is_retried_once_after_its_lease_and_sent_once(
    due, time_machine
):
    now = timezone.now()
    # The sweep that died: it claimed the rows and never delivered them.
    dead = services._claim(now, len(due), "a-sweep-that-died")
    assert sorted(dead) == sorted(r.pk for r in due)

    for at in (now, now + services.LEASE - SECOND):
        time_machine.move_to(at, tick=False)
        assert services.sweep_due_reminders()["sent"] == 0
        assert not reminder_notifications().exists()
        assert mail.outbox == []

    time_machine.move_to(now + services.LEASE + SECOND, tick=False)
    assert services.sweep_due_reminders()["sent"] == len(due)

    assert_each_sent_once(due)
    retried = Reminder.objects.filter(pk__in=dead)
    assert set(retried.values_list("attempts", flat=True)) == {2}
    assert "a-sweep-that-died" not in set(retried.values_list("claimed_by", flat=True))
    # And never again.
    time_machine.move_to(now + 3 * services.LEASE, tick=False)
    assert services.sweep_due_reminders()["sent"] == 0
    assert_each_sent_once(due)


def test_two_plans_of_one_course_at_once_plan_its_course_start_cadence_once(
    esketamine_course, nurse, monkeypatch
):
    """SPEC §F1a: occurrences counted from the course start are planned once per course. Two
    plans of the same course at once (two discharges signed together) do not both plan them,
    and neither fails: the second waits for the first and finds them planned."""
    course_start_at = services.course_start_at

    def slow_course_start_at(course):
        time.sleep(HOLD / 2)  # widens the window between looking and writing
        return course_start_at(course)

    monkeypatch.setattr(services, "course_start_at", slow_course_start_at)
    rules = esketamine_course.protocol_version.parsed
    anchored = [r for r in rules.followups if r.anchor == "course_start"]
    assert anchored
    start = timezone.now()
    barrier = threading.Barrier(2)

    def plan():
        return services.plan_from(course=esketamine_course, start=start, acting_user=nurse)

    first, second = Worker("plan-1", plan, barrier), Worker("plan-2", plan, barrier)
    run_together(first, second)

    for rule in anchored:
        rows = FollowUp.objects.filter(course=esketamine_course, code__startswith=rule.code)
        assert rows.count() == occurrences(rule), rule.code
    per_session = [r for r in rules.followups if r.per_session]
    for rule in per_session:
        assert FollowUp.objects.filter(course=esketamine_course, code=rule.code).count() == 2
