"""The reminder sweep (SPEC §F4, §F5): due rows are sent once, in-app and by e-mail; closed
follow-ups' reminders are cancelled; quiet hours defer; overdue follow-ups escalate to the
responsible psychiatrist, then to the site's administrators; a failing mail server is retried,
then given up; `manage.py send_due_reminders` runs the same sweep.

The clock is moved with time-machine and the sweep reads it (`sweep_due_reminders()` without
`now`), as beat's task does. Mail goes to Django's locmem backend (tests/followups/conftest.py).
"""

from __future__ import annotations

import re
import smtplib
from datetime import UTC, datetime, time, timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from clinic.models import Notification, Role
from followups import services
from followups.models import FollowUp, Reminder
from protocols.models import TreatmentCourse
from tests.followups.helpers import (
    in_app,
    reminders_of,
    rules_where,
)

pytestmark = pytest.mark.django_db

SECOND = timedelta(seconds=1)
QUIET_FROM, QUIET_UNTIL = time(21, 0), time(7, 0)


def complete_url(followup: FollowUp) -> str:
    return reverse("followups:complete", kwargs={"followup_id": followup.pk})


def sweep() -> dict[str, int]:
    return services.sweep_due_reminders()


def nothing_happened() -> dict[str, int]:
    return {"sent": 0, "cancelled": 0, "deferred": 0, "failed": 0}


def next_day_call(course: TreatmentCourse, *, due_at: datetime, acting_user) -> FollowUp:
    """Plan the course's follow-ups so that the nurses' call falls due at `due_at`."""
    (rule,) = rules_where(course.protocol_version.parsed, role=Role.NURSE)
    start = due_at - timedelta(hours=rule.offset_hours)
    services.plan_from(course=course, start=start, acting_user=acting_user)
    return FollowUp.objects.get(course=course, code=rule.code, state=FollowUp.State.OPEN)


@pytest.fixture
def call(approved_course, nurse, administrator, time_machine) -> FollowUp:
    """The next-day call, due in an hour; the clock is frozen. The site's staff (the nurse, the
    course's psychiatrist, an administrator) exist when it is planned: reminders are rows made
    for the people there are at planning time."""
    time_machine.move_to(timezone.now(), tick=False)
    return next_day_call(
        approved_course, due_at=timezone.now() + timedelta(hours=1), acting_user=nurse
    )


# --- Sending ---------------------------------------------------------------------------------


def test_a_due_reminder_is_sent_once_in_app_and_by_email_and_not_before_it_is_due(
    call, nurse, time_machine
):
    due = reminders_of(call).filter(recipient=nurse)
    assert set(due.values_list("channel", "due_at")) == {
        (Reminder.Channel.IN_APP, call.due_at),
        (Reminder.Channel.EMAIL, call.due_at),
    }
    time_machine.move_to(call.due_at - SECOND, tick=False)
    assert sweep() == nothing_happened()
    assert not in_app(nurse).exists()

    time_machine.move_to(call.due_at, tick=False)
    counts = sweep()

    assert counts == {**nothing_happened(), "sent": 2}
    (notification,) = in_app(nurse)
    assert notification.url == complete_url(call)
    assert call.label in notification.title
    (message,) = mail.outbox
    assert message.to == [nurse.email]
    assert call.label in message.subject
    assert f"{settings.VIGIL_BASE_URL}{complete_url(call)}" in message.body
    for reminder in due:
        assert (reminder.state, reminder.attempts, reminder.sent_at) == (
            Reminder.State.SENT,
            1,
            call.due_at,
        )
    # Once sent, never again.
    time_machine.move_to(call.due_at + timedelta(hours=1), tick=False)
    assert sweep() == nothing_happened()
    assert in_app(nurse).count() == 1
    assert len(mail.outbox) == 1


@pytest.mark.parametrize("close", ["completed", "cancelled", "missed"])
def test_the_pending_reminders_of_a_closed_follow_up_are_cancelled_and_never_sent(
    call, nurse, psychiatrist, administrator, time_machine, close
):
    if close == "completed":
        services.followup_complete(
            followup=call, acting_user=nurse, contact_method="phone", outcome="All well."
        )
    elif close == "cancelled":
        services.followup_cancel(followup=call, acting_user=nurse, reason="Moved away")
    else:
        services.followup_mark_missed(followup=call, acting_user=nurse, reason="No answer x3")

    assert reminders_of(call).exists()
    assert set(reminders_of(call).values_list("state", flat=True)) == {Reminder.State.CANCELLED}
    # Past the due time and every escalation step.
    last = max(s["overdue_hours"] for s in call.escalation)
    time_machine.move_to(call.window_ends_at + timedelta(hours=last + 1), tick=False)
    sweep()
    url = complete_url(call)
    assert not Notification.objects.filter(url=url).exists()
    assert not [m for m in mail.outbox if url in m.body]
    assert set(reminders_of(call).values_list("state", flat=True)) == {Reminder.State.CANCELLED}


def test_a_reminder_claimed_by_a_sweep_that_died_is_not_sent_once_the_follow_up_is_completed(
    call, nurse, time_machine
):
    time_machine.move_to(call.due_at, tick=False)
    claimed = services._claim(timezone.now(), 500, "a-sweep-that-died")
    due = reminders_of(call).filter(due_at__lte=timezone.now())
    assert set(claimed) == set(due.values_list("pk", flat=True))

    services.followup_complete(
        followup=call, acting_user=nurse, contact_method="phone", outcome="All well."
    )
    time_machine.move_to(call.due_at + services.LEASE + SECOND, tick=False)
    sweep()

    assert not in_app(nurse).exists()
    assert mail.outbox == []
    assert set(reminders_of(call).values_list("state", flat=True)) == {Reminder.State.CANCELLED}


# --- Quiet hours -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "evening",
    [
        pytest.param(datetime(2027, 6, 15, 23, 0), id="summer-night"),
        # The night the clocks go back: 07:00 GMT is nine hours after 23:00 BST, not eight.
        pytest.param(datetime(2027, 10, 30, 23, 0), id="night-the-clocks-go-back"),
    ],
)
def test_a_reminder_due_in_quiet_hours_is_deferred_to_their_end_and_sent_then(
    approved_course, site, nurse, time_machine, evening
):
    site.quiet_hours_start, site.quiet_hours_end = QUIET_FROM, QUIET_UNTIL
    site.save(update_fields=["quiet_hours_start", "quiet_hours_end"])
    due_local = evening.replace(tzinfo=site.tzinfo)
    morning = datetime.combine(evening.date() + timedelta(days=1), QUIET_UNTIL, site.tzinfo)
    time_machine.move_to(due_local - timedelta(days=2), tick=False)
    call = next_day_call(approved_course, due_at=due_local, acting_user=nurse)
    due = reminders_of(call).filter(recipient=nurse)

    time_machine.move_to(due_local, tick=False)
    assert sweep() == {**nothing_happened(), "deferred": 2}

    assert not in_app(nurse).exists()
    assert mail.outbox == []
    assert set(due.values_list("state", "due_at")) == {(Reminder.State.PENDING, morning)}
    # Elapsed time in UTC (subtracting two times of one zone would give wall-clock hours).
    elapsed = morning.astimezone(UTC) - due_local.astimezone(UTC)
    assert elapsed == timedelta(hours=8) + due_local.utcoffset() - morning.utcoffset()
    time_machine.move_to(morning - SECOND, tick=False)
    assert sweep() == nothing_happened()
    assert not in_app(nurse).exists()

    time_machine.move_to(morning, tick=False)
    assert sweep() == {**nothing_happened(), "sent": 2}
    assert in_app(nurse).count() == 1
    assert len(mail.outbox) == 1
    assert set(due.values_list("state", "sent_at")) == {(Reminder.State.SENT, morning)}


# --- Escalation (SPEC §F5) -------------------------------------------------------------------


def test_an_overdue_follow_up_escalates_to_the_psychiatrist_then_to_the_site_administrators(
    second_psychiatrist,  # the bystanders exist before the plan is made
    other_site_staff,
    call,
    nurse,
    psychiatrist,
    administrator,
    time_machine,
):
    steps = {step["role"]: step["overdue_hours"] for step in call.escalation}
    assert set(steps) == {Role.PSYCHIATRIST, Role.ADMINISTRATOR}
    assert steps[Role.PSYCHIATRIST] < steps[Role.ADMINISTRATOR]
    to_psychiatrist = call.window_ends_at + timedelta(hours=steps[Role.PSYCHIATRIST])
    to_administrators = call.window_ends_at + timedelta(hours=steps[Role.ADMINISTRATOR])
    escalated = [psychiatrist, administrator]

    time_machine.move_to(to_psychiatrist - SECOND, tick=False)
    sweep()  # the nurse's own reminders go out; nobody else hears yet
    assert in_app(nurse).count() == 1
    assert not any(in_app(user).exists() for user in escalated)

    time_machine.move_to(to_psychiatrist, tick=False)
    assert sweep() == {**nothing_happened(), "sent": 2}
    (notification,) = in_app(psychiatrist)
    assert notification.title.startswith(f"Overdue by {steps[Role.PSYCHIATRIST]} h")
    assert call.label in notification.title
    assert [m.to for m in mail.outbox[1:]] == [[psychiatrist.email]]
    assert not in_app(administrator).exists()

    time_machine.move_to(to_administrators - SECOND, tick=False)
    assert sweep() == nothing_happened()
    time_machine.move_to(to_administrators, tick=False)
    assert sweep() == {**nothing_happened(), "sent": 2}
    (notification,) = in_app(administrator)
    assert notification.title.startswith(f"Overdue by {steps[Role.ADMINISTRATOR]} h")
    assert [m.to for m in mail.outbox[2:]] == [[administrator.email]]
    # Only the course's psychiatrist, only this site's administrators; each once.
    bystanders = [second_psychiatrist, *other_site_staff.values()]
    assert not Notification.objects.filter(recipient__in=bystanders).exists()
    assert in_app(psychiatrist).count() == 1
    assert in_app(nurse).count() == 1


# --- A failing mail server -------------------------------------------------------------------


class MailServerDown:
    """Stands in for send_mail: fails `failures` times, then sends."""

    def __init__(self, failures: int):
        self.failures, self.calls = failures, 0

    def __call__(self, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise smtplib.SMTPServerDisconnected("mail server down")
        return mail.send_mail(**kwargs)


def email_of(call: FollowUp, user) -> Reminder:
    return reminders_of(call).get(recipient=user, channel=Reminder.Channel.EMAIL)


def test_a_failing_mail_server_is_retried_later_and_the_mail_sent_once(
    call, nurse, time_machine, monkeypatch
):
    server = MailServerDown(failures=1)
    monkeypatch.setattr(services, "send_mail", server)
    time_machine.move_to(call.due_at, tick=False)

    assert sweep() == {**nothing_happened(), "sent": 1, "failed": 1}

    reminder = email_of(call, nurse)
    assert (reminder.state, reminder.attempts) == (Reminder.State.PENDING, 1)
    assert "mail server down" in reminder.last_error
    assert reminder.due_at > call.due_at  # later, not in a tight loop
    assert in_app(nurse).count() == 1  # the in-app reminder is not held back
    time_machine.move_to(reminder.due_at - SECOND, tick=False)
    assert sweep() == nothing_happened()

    time_machine.move_to(reminder.due_at, tick=False)
    assert sweep() == {**nothing_happened(), "sent": 1}
    reminder.refresh_from_db()
    assert (reminder.state, reminder.attempts) == (Reminder.State.SENT, 2)
    assert server.calls == 2
    assert [m.to for m in mail.outbox] == [[nurse.email]]


def test_a_mail_that_keeps_failing_is_marked_failed_after_the_maximum_attempts(
    call, nurse, time_machine, monkeypatch
):
    server = MailServerDown(failures=services.MAX_ATTEMPTS + 10)
    monkeypatch.setattr(services, "send_mail", server)
    reminder = email_of(call, nurse)

    for attempt in range(1, services.MAX_ATTEMPTS + 1):
        time_machine.move_to(reminder.due_at, tick=False)
        assert sweep()["failed"] == 1
        reminder.refresh_from_db()
        assert reminder.attempts == attempt
        expected = Reminder.State.FAILED if attempt == services.MAX_ATTEMPTS else "pending"
        assert reminder.state == expected

    # Later, before anything else of the plan is due: nothing is tried again.
    time_machine.move_to(call.window_ends_at, tick=False)
    assert sweep() == nothing_happened()
    reminder.refresh_from_db()
    assert (reminder.state, reminder.attempts) == (Reminder.State.FAILED, services.MAX_ATTEMPTS)
    assert server.calls == services.MAX_ATTEMPTS
    assert mail.outbox == []


# --- The management command ------------------------------------------------------------------


def test_the_send_due_reminders_command_runs_the_same_sweep_and_prints_the_counts(
    call, nurse, time_machine
):
    time_machine.move_to(call.due_at, tick=False)
    out = StringIO()

    call_command("send_due_reminders", stdout=out)

    printed = re.findall(r"(\d+) (sent|cancelled|deferred|failed)", out.getvalue())
    counts = {name: int(n) for n, name in printed}
    assert counts == {**nothing_happened(), "sent": 2}
    assert in_app(nurse).count() == 1
    assert len(mail.outbox) == 1
    assert set(reminders_of(call).filter(recipient=nurse).values_list("state", flat=True)) == {
        Reminder.State.SENT
    }

    out = StringIO()
    call_command("send_due_reminders", stdout=out)
    assert "0 sent" in out.getvalue()
    assert in_app(nurse).count() == 1
