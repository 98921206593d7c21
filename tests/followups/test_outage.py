"""When Redis or the worker is down the web application keeps working and nothing is lost; the due
reminders go out once the sweep runs again (SPEC §F7).

The broker is made unreachable by pointing the Celery app's broker URL, which `apply_async` uses,
at a closed port; the fixture checks that it really is unreachable, and restores the app after.
The on-commit callbacks (the nudge to the worker after a risk answer) run inside the timed block.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError

from clinic.celery import app as celery_app
from clinic.models import Notification, Role
from followups import services
from followups.models import FollowUp, Reminder
from followups.tasks import sweep_reminders
from monitoring.models import TreatmentSession
from tests.followups.helpers import (
    NORMAL_VITALS,
    discharge_criteria,
    in_app,
    ready_for_discharge,
    reminders_of,
    rules_where,
)

pytestmark = pytest.mark.django_db

DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1
BUDGET = 2.0  # seconds a request may take while the broker is down
NOT_ENQUEUED = "reminder sweep not enqueued: broker unavailable"


def _forget_broker_connections() -> None:
    """Drop the app's producer pool so that the next publish connects to the configured URL
    (what Celery itself does after a fork)."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def broker_down(settings) -> Iterator[None]:
    saved = celery_app.conf.broker_url
    _forget_broker_connections()
    celery_app.conf.broker_url = settings.REDIS_URL = DEAD_BROKER
    try:
        assert sweep_reminders.app is celery_app
        with celery_app.connection_for_write() as connection:
            assert (connection.transport_cls, connection.hostname, connection.port) == (
                "redis",
                "127.0.0.1",
                1,
            )
            with pytest.raises(OperationalError):
                connection.ensure_connection(max_retries=0)
        yield
    finally:
        _forget_broker_connections()
        celery_app.conf.broker_url = saved


class TooSlow(Exception):
    """The request took longer than BUDGET (its own type: the xfail below expects only it)."""


def assert_quick(elapsed: float) -> None:
    if elapsed >= BUDGET:
        raise TooSlow(f"the request took {elapsed:.2f} s with the broker down (budget {BUDGET} s)")


def form_data(values: dict) -> dict[str, str]:
    """As a browser posts it: ticked boxes "on", unticked and empty fields left out."""
    posted = {}
    for name, value in values.items():
        if value is None or value is False:
            continue
        posted[name] = "on" if value is True else str(value)
    return posted


def timed_post(client, url: str, data: dict, capture) -> tuple[object, float]:
    started = time.monotonic()
    with capture(execute=True):
        response = client.post(url, data)
    return response, time.monotonic() - started


def test_saving_vitals_works_at_once_while_the_broker_is_down(
    broker_down, dosing, nurse, client, django_capture_on_commit_callbacks
):
    client.force_login(nurse)
    before = dosing.vitals.count()

    response, elapsed = timed_post(
        client,
        reverse("monitoring:vitals_new", kwargs={"session_id": dosing.pk}),
        {**{k: str(v) for k, v in NORMAL_VITALS.items()}, "client_token": str(uuid.uuid4())},
        django_capture_on_commit_callbacks,
    )

    assert response.status_code == 302, response.content[:500]
    assert_quick(elapsed)
    assert dosing.vitals.count() == before + 1


def test_discharging_works_at_once_while_the_broker_is_down_and_the_plan_is_sent_later(
    broker_down,
    dosing,
    nurse,
    anesthesiologist,
    password,
    client,
    time_machine,
    django_capture_on_commit_callbacks,
):
    session = ready_for_discharge(dosing, nurse=nurse, time_machine=time_machine)
    time_machine.move_to(timezone.now(), tick=True)  # a running clock, as in production
    client.force_login(anesthesiologist)

    response, elapsed = timed_post(
        client,
        reverse("monitoring:discharge", kwargs={"session_id": session.pk}),
        {**form_data(discharge_criteria(session)), "password": password},
        django_capture_on_commit_callbacks,
    )

    assert response.status_code == 302, response.content[:500]
    assert_quick(elapsed)
    session.refresh_from_db()
    assert session.status == TreatmentSession.Status.DISCHARGED
    (rule,) = rules_where(session.rules, role=Role.NURSE)
    call = FollowUp.objects.get(session=session, code=rule.code)
    assert set(reminders_of(call).values_list("state", flat=True)) == {Reminder.State.PENDING}
    # Nothing lost: when the call falls due the sweep sends it, once.
    time_machine.move_to(call.due_at, tick=False)
    assert services.sweep_due_reminders()["sent"] == 2
    assert services.sweep_due_reminders()["sent"] == 0
    assert in_app(nurse).count() == 1
    assert [m.to for m in mail.outbox] == [[nurse.email]]


RISK_FORM = {
    "contact_method": "phone",
    "outcome": "Says she has thought about how she would do it.",
    # C-SSRS: thoughts with a method (Q3), no intent or plan, no behaviour: moderate risk.
    "cssrs_q1": "yes",
    "cssrs_q2": "yes",
    "cssrs_q3": "yes",
    "cssrs_q4": "no",
    "cssrs_q5": "no",
    "cssrs_q6": "no",
}


@pytest.fixture
def due_call(approved_course, nurse, administrator) -> FollowUp:
    # The real clock: kombu's connection retries end on wall-clock time, which a frozen clock
    # would never reach.
    (rule,) = rules_where(approved_course.protocol_version.parsed, role=Role.NURSE)
    start = timezone.now() - timedelta(hours=rule.offset_hours)
    services.plan_from(course=approved_course, start=start, acting_user=nurse)
    return FollowUp.objects.get(course=approved_course, code=rule.code)


def complete_with_a_risk_answer(client, call, nurse, capture) -> tuple[object, float]:
    client.force_login(nurse)
    url = reverse("followups:complete", kwargs={"followup_id": call.pk})
    return timed_post(client, url, RISK_FORM, capture)


def test_a_risk_answer_is_recorded_and_alerted_while_the_broker_is_down_and_mailed_later(
    broker_down,
    due_call,
    nurse,
    psychiatrist,
    client,
    caplog,
    django_capture_on_commit_callbacks,
):
    caplog.set_level(logging.WARNING, logger="followups.services")

    response, _elapsed = complete_with_a_risk_answer(
        client, due_call, nurse, django_capture_on_commit_callbacks
    )

    assert response.status_code == 302, response.content[:500]
    due_call.refresh_from_db()
    assert (due_call.state, due_call.cssrs_risk, due_call.risk_flagged) == (
        FollowUp.State.COMPLETED,
        "moderate",
        True,
    )
    # The psychiatrist is alerted in the application at once; the e-mail waits for the sweep.
    assert Notification.objects.filter(
        recipient=psychiatrist, kind=Notification.Kind.FOLLOWUP_RISK
    ).exists()
    (risk_mail,) = Reminder.objects.filter(recipient=psychiatrist, followup=None)
    assert risk_mail.state == Reminder.State.PENDING
    # The request did try to wake the worker, and carried on when the broker refused.
    assert NOT_ENQUEUED in caplog.messages
    assert mail.outbox == []

    assert services.sweep_due_reminders()["sent"] == 1
    assert services.sweep_due_reminders()["sent"] == 0
    risk_mail.refresh_from_db()
    assert risk_mail.state == Reminder.State.SENT
    assert [m.subject for m in mail.outbox if m.to == [psychiatrist.email]] == [
        f"Vigil: {risk_mail.title}"
    ]


def test_completing_a_follow_up_with_a_risk_answer_takes_under_2_s_while_the_broker_is_down(
    broker_down, due_call, nurse, client, django_capture_on_commit_callbacks
):
    response, elapsed = complete_with_a_risk_answer(
        client, due_call, nurse, django_capture_on_commit_callbacks
    )

    assert response.status_code == 302
    assert_quick(elapsed)
