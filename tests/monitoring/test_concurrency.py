"""Two people writing to one session at the same moment (SPEC §M3, §M5, §M6, §N5).

Chairside, two nurses may save vitals for the same patient at once, and a nervous double click
posts the same form twice. Every write locks the session row first (`services._locked_session`),
so the writers take turns: nothing is lost, nothing is saved twice, and each reading is evaluated
against the readings committed before it.

The threaded tests run each writer in its own thread with its own database connection, released
together by a `threading.Barrier`. To prove that the two really overlap (and do not merely run one
after the other), the first writer to take the session lock holds it for `HOLD` seconds; the test
then checks that the other writer was already waiting. PostgreSQL queues the second writer on the
row lock (SELECT ... FOR UPDATE); SQLite queues it on BEGIN IMMEDIATE (the settings' transaction
mode), so the same tests are meaningful on both.

The tests are transactional (each thread must see the committed fixtures) with a serialized
rollback, which reloads the rows the migrations created (roles, default protocols) after each
test's flush. That reload only works on an empty database or over the very rows it saved: after
a transactional test *without* serialized rollback (tests/clinic use `transactional_db`), the
flush re-creates the content types under new ids and the reload collides with them. So this
module starts from an empty database, and puts the migrated rows back when it ends for the tests
that follow.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone

from clinic.models import Notification, Role
from monitoring import services
from monitoring.evaluation import evaluate_reading
from monitoring.models import Alert, RequiredCheck, TreatmentSession, VitalReading
from tests.factories import UserFactory

# Transactional: each thread has its own connection and must see the committed fixtures. The
# serialized rollback puts back the rows the migrations created (roles, default protocols) that the
# flush at the end of each such test removes.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

WAIT = 20  # seconds: a bound for a stuck test, never reached when all is well
HOLD = 0.5  # seconds the first writer keeps the session locked

NORMAL = {"sbp": 128, "dbp": 82, "hr": 74, "rr": 14, "spo2": 98, "moaas": 5}


@pytest.fixture(scope="module", autouse=True)
def _start_from_an_empty_database(django_db_setup, django_db_blocker):
    """Flush without re-creating content types, so that the serialized rollback only inserts;
    reload the migrated rows at the end for the tests that follow. Sequences are kept: the
    reloaded rows keep their ids, new rows must not be given the same ones."""
    flush = {
        "interactive": False,
        "inhibit_post_migrate": True,
        "reset_sequences": False,
        "verbosity": 0,
    }
    with django_db_blocker.unblock():
        call_command("flush", **flush)
        yield
        call_command("flush", **flush)
        connection.creation.deserialize_db_from_string(connection._test_serialized_contents)


@pytest.fixture
def second_nurse(site):
    return UserFactory(username="nurse-two", roles=[Role.NURSE], sites=[site])


@pytest.fixture
def in_infusion_window(dosing, time_machine) -> TreatmentSession:
    """The clock is moved to 10 min after the dose start: the first infusion check is due."""
    time_machine.move_to(dosing.dose_started_at + timedelta(minutes=10), tick=True)
    return dosing


class Writer(threading.Thread):
    """Runs `work` in its own thread (hence its own connection), closed when done."""

    def __init__(self, name: str, work: Callable[[], Any], barrier: threading.Barrier):
        super().__init__(name=name, daemon=True)
        self.work, self.barrier = work, barrier
        self.called_at: float | None = None
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.barrier.wait(WAIT)
            self.called_at = time.monotonic()
            self.result = self.work()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            connections.close_all()


class LockLog:
    """Logs when each writer got the session lock; the first one to get it then holds it.

    The hold comes at the end of the first writer's transaction (when it satisfies the due
    checks, after it saved its reading and raised its alerts), so that without the lock the
    other writer would read the session while the first one's work is still uncommitted.
    """

    def __init__(self, monkeypatch):
        self.acquired: dict[str, float] = {}
        self._guard = threading.Lock()
        self._holder: str | None = None
        locked_session, satisfy_checks = services._locked_session, services._satisfy_checks

        def logged_locked_session(session):
            locked = locked_session(session)
            with self._guard:
                name = threading.current_thread().name
                self.acquired[name] = time.monotonic()
                self._holder = self._holder or name
            return locked

        def held_satisfy_checks(*args, **kwargs):
            if threading.current_thread().name == self._holder:
                time.sleep(HOLD)  # inside the writer's transaction: the lock stays held
            return satisfy_checks(*args, **kwargs)

        monkeypatch.setattr(services, "_locked_session", logged_locked_session)
        monkeypatch.setattr(services, "_satisfy_checks", held_satisfy_checks)

    def assert_overlapped(self, *writers: Writer) -> None:
        """The second writer was called while the first held the lock, and waited for it."""
        assert len(self.acquired) == len(writers) == 2, self.acquired
        first, second = sorted(writers, key=lambda w: self.acquired[w.name])
        released = self.acquired[first.name] + HOLD
        assert second.called_at < released, "the second writer started after the first finished"
        assert self.acquired[second.name] >= released, "the second writer did not wait"


def run_together(*writers: Writer) -> None:
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(WAIT)
    for writer in writers:
        assert not writer.is_alive(), f"{writer.name} is stuck"
        assert writer.error is None, f"{writer.name}: {writer.error!r}"


def record(session_id: int, user, **values) -> Callable[[], VitalReading]:
    """A writer's work: load the session on the thread's own connection, record one reading."""

    def work() -> VitalReading:
        session = TreatmentSession.objects.get(pk=session_id)
        return services.vitals_record(session=session, acting_user=user, **values)

    return work


def replayed_alerts(session: TreatmentSession) -> list[tuple[int, str, str, str]]:
    """The alerts a one-at-a-time evaluation gives: each reading against the readings saved
    before it (within an hour either side), the latest pre-dose one as its baseline."""
    readings = list(session.vitals.filter(entered_in_error_at__isnull=True).order_by("id"))
    expected = []
    for n, reading in enumerate(readings):
        if reading.is_predose:
            continue
        before = [
            r
            for r in readings[:n]
            if abs(r.measured_at - reading.measured_at) <= timedelta(hours=1)
        ]
        baseline = max(
            (r for r in readings[:n] if r.is_predose), key=lambda r: (r.measured_at, r.id)
        )
        for raised in evaluate_reading(
            rules=session.rules.alerts, reading=reading, baseline=baseline, earlier=before
        ):
            expected.append((reading.pk, raised.level, raised.field, raised.message))
    return sorted(expected)


def saved_alerts(session: TreatmentSession) -> list[tuple[int, str, str, str]]:
    return sorted(session.alerts.values_list("reading_id", "level", "field", "message"))


def test_it_uses_a_database_that_can_run_writers_side_by_side():
    # The threaded tests below are meaningful on both engines the project supports; anything
    # else would need its own look at how it queues writers.
    assert connection.vendor in {"postgresql", "sqlite"}


def test_the_migrated_rows_can_be_reloaded_over_themselves():
    # What TransactionTestCase(serialized_rollback=True) does before a test when the previous
    # test did not flush (the first such test of a run, after the non-transactional tests): it
    # saves every migrated row over itself. The guard on published protocol versions and
    # consent templates (clinic/db.py) must let such an unchanged re-save through.
    connection.creation.deserialize_db_from_string(connection._test_serialized_contents)


def test_two_nurses_saving_vitals_at_once_keeps_both_readings(
    in_infusion_window, nurse, second_nurse, monkeypatch
):
    session = in_infusion_window
    locks = LockLog(monkeypatch)
    barrier = threading.Barrier(2)
    first = Writer("nurse-one", record(session.pk, nurse, **NORMAL), barrier)
    second = Writer(
        "nurse-two",
        record(session.pk, second_nurse, **{**NORMAL, "sbp": 134, "hr": 80}),
        barrier,
    )

    run_together(first, second)

    locks.assert_overlapped(first, second)
    post_dose = session.vitals.filter(is_predose=False)
    assert post_dose.count() == 2
    assert {(r.entered_by_id, r.sbp, r.hr) for r in post_dose} == {
        (nurse.pk, 128, 74),
        (second_nurse.pk, 134, 80),
    }
    assert first.result.client_token != second.result.client_token
    assert not Alert.objects.filter(session=session).exists()
    # The first infusion check is met once, by the earlier of the two readings.
    check = session.checks.get(code="infusion-1")
    assert check.satisfied_at == min(r.measured_at for r in post_dose)
    assert check.history.filter(history_change_reason="Recorded in window").count() == 1
    assert not session.checks.filter(satisfied_at__isnull=False, code="infusion-2").exists()


def test_two_high_readings_saved_at_once_raise_the_repeat_critical_alert_once(
    in_infusion_window, nurse, second_nurse, anesthesiologist, monkeypatch
):
    # SBP >= 180 on two consecutive readings 5 to 15 minutes apart is critical (SPEC §M5).
    # Each writer evaluates its reading against what was committed before it took the lock, so
    # exactly one of the two — the later one — sees the other and raises the critical alert.
    session = in_infusion_window
    rule = next(
        r
        for r in session.rules.alerts
        if r.level == "critical" and r.field == "sbp" and r.persistence_window_minutes
    )
    high = {**NORMAL, "sbp": int(rule.value) + 5, "dbp": 90}
    # Two readings the minimum gap apart (SPEC §M5: "at least 5 minutes apart"), the earlier
    # one charted late: whichever is saved second completes the pair.
    now = timezone.now()
    gap = timedelta(minutes=rule.persistence_min_gap_minutes)
    locks = LockLog(monkeypatch)
    barrier = threading.Barrier(2)
    first = Writer("nurse-one", record(session.pk, nurse, measured_at=now - gap, **high), barrier)
    second = Writer("nurse-two", record(session.pk, second_nurse, measured_at=now, **high), barrier)

    run_together(first, second)

    locks.assert_overlapped(first, second)
    # Saved order (under the session lock) decides which reading sees the other.
    earlier, later = session.vitals.filter(is_predose=False).order_by("id")
    assert saved_alerts(session) == replayed_alerts(session)
    critical = session.alerts.filter(level=Alert.Level.CRITICAL)
    assert [(a.reading_id, a.message) for a in critical] == [(later.pk, rule.message)]
    assert session.alerts.filter(reading=earlier, level=Alert.Level.WARNING).exists()
    assert (
        Notification.objects.filter(
            recipient=anesthesiologist, kind=Notification.Kind.CRITICAL_ALERT
        ).count()
        == 1
    )


def test_a_double_submitted_vitals_form_saves_one_reading(client, in_infusion_window, nurse):
    session = in_infusion_window
    client.force_login(nurse)
    url = reverse("monitoring:vitals_new", kwargs={"session_id": session.pk})
    token = uuid.uuid4()
    form = {**{k: str(v) for k, v in NORMAL.items()}, "client_token": str(token)}

    responses = [client.post(url, form), client.post(url, form)]
    htmx = client.post(url, form, headers={"HX-Request": "true"})

    session_url = reverse("monitoring:session", kwargs={"session_id": session.pk})
    assert [(r.status_code, r.url) for r in responses] == [(302, session_url)] * 2
    assert htmx.status_code == 200
    assert VitalReading.objects.filter(session=session, client_token=token).count() == 1
    assert session.vitals.filter(is_predose=False).count() == 1


def test_the_same_form_posted_from_two_threads_at_once_saves_one_reading(
    in_infusion_window, nurse, anesthesiologist, monkeypatch
):
    # A critical value, so a duplicate would also show as a second alert and a second page.
    session = in_infusion_window
    critical = next(r for r in session.rules.alerts if r.level == "critical" and r.field == "spo2")
    values = {**NORMAL, "spo2": int(critical.value) - 2, "client_token": uuid.uuid4()}
    locks = LockLog(monkeypatch)
    barrier = threading.Barrier(2)
    first = Writer("click-one", record(session.pk, nurse, **values), barrier)
    second = Writer("click-two", record(session.pk, nurse, **values), barrier)

    run_together(first, second)

    locks.assert_overlapped(first, second)
    assert first.result.pk == second.result.pk
    reading = VitalReading.objects.get(session=session, client_token=values["client_token"])
    assert session.vitals.filter(is_predose=False).count() == 1
    assert list(session.alerts.values_list("reading_id", "level", "message")) == [
        (reading.pk, Alert.Level.CRITICAL, critical.message)
    ]
    assert (
        Notification.objects.filter(
            recipient=anesthesiologist, kind=Notification.Kind.CRITICAL_ALERT
        ).count()
        == 1
    )
    assert RequiredCheck.objects.get(session=session, code="infusion-1").satisfied_at == (
        reading.measured_at
    )
