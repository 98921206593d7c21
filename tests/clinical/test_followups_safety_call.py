"""An overdue safety call is never superseded (SPEC §F1a, §F5, §C5; issue 10 "Follow-ups").

SPEC §F1a: "An overdue safety call is never superseded by a later session: it stays overdue and
escalates until done or closed as missed with a reason." SPEC §F5: "overdue by 24 h → the
responsible psychiatrist; by 72 h → the site's administrators". SPEC §C5 counts "follow-ups
completed in window" and "overdue follow-ups now".

More generally a later session's plan never cancels an open follow-up and never moves one later.
Decided for rules counted from the discharge and not owed per session (the 7-day review): while
one is open it is kept as planned and the later session plans none of that rule.
"""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from compliance.selectors import FIGURES, Scope, figure_rows, load_rule_book
from followups import services
from followups.models import FollowUp, Reminder
from protocols.models import TreatmentCourse
from tests.followups.helpers import CLOCK_CHANGES, dosed, local, plan_at_discharge

pytestmark = pytest.mark.django_db

SECOND = timedelta(seconds=1)
DISCHARGE_AFTER = timedelta(hours=2)
EDGES = [pytest.param(-SECOND, id="window-end-minus-1s"),
         pytest.param(timedelta(0), id="at-window-end"),
         pytest.param(SECOND, id="window-end-plus-1s")]  # fmt: skip


def call_rule(course: TreatmentCourse):
    (rule,) = [r for r in course.protocol_version.parsed.followups if r.code == "next_day_call"]
    return rule


def figure(slug: str, site, at, *, now) -> dict[int, str]:
    """The violations of a compliance figure on the day `at` falls on: {record pk: reason}."""
    day = timezone.localtime(at, site.tzinfo).date()
    scope = Scope(site=site, start=day, end=day, now=now)
    rows = figure_rows(FIGURES[slug], scope, load_rule_book(), violations_only=True)
    return {row.pk: row.reason for row in rows}


@pytest.fixture(params=list(CLOCK_CHANGES), ids=list(CLOCK_CHANGES))
def eve_of_a_clock_change(request, site, time_machine):
    """The site in the zone of a clock change, the clock on the morning before it: the call of
    a session discharged that afternoon falls due across the change."""
    zone, change_day, shift = CLOCK_CHANGES[request.param]
    site.time_zone = zone
    site.save()
    eve = change_day - timedelta(days=1)
    time_machine.move_to(local(zone, eve, 9), tick=False)
    return zone, eve, shift


@pytest.mark.parametrize("next_discharge_from_window_end", EDGES)
def test_f1a_an_overdue_next_day_call_is_not_superseded_by_the_next_session(
    eve_of_a_clock_change, clinic, time_machine, next_discharge_from_window_end
):
    zone, eve, shift = eve_of_a_clock_change
    course = clinic.course("iv-ketamine")
    rule = call_rule(course)
    assert rule.per_session
    first = dosed(clinic, course, at=local(zone, eve, 12), time_machine=time_machine)
    discharged = local(zone, eve, 14)
    plan_at_discharge(
        first, at=discharged, signer=clinic.anesthesiologist, time_machine=time_machine
    )
    call = FollowUp.objects.get(session=first, code=rule.code)
    # Due a real 24 hours later: on the wall clock an hour later or earlier (SPEC §N4).
    assert call.due_at == discharged.astimezone(UTC) + timedelta(hours=rule.offset_hours)
    assert call.due_at.astimezone(discharged.tzinfo).utcoffset() - discharged.utcoffset() == shift
    planned = (call.due_at, call.window_ends_at)
    reminders = set(call.reminders.values_list("pk", flat=True))

    at = call.window_ends_at + next_discharge_from_window_end
    later = dosed(clinic, course, at=at - DISCHARGE_AFTER, time_machine=time_machine)
    created = plan_at_discharge(
        later, at=at, signer=clinic.anesthesiologist, time_machine=time_machine
    )

    call.refresh_from_db()
    assert call.state == FollowUp.State.OPEN
    assert (call.due_at, call.window_ends_at) == planned
    overdue = next_discharge_from_window_end > timedelta(0)
    assert call.display_status(at) == ("overdue" if overdue else "due")
    # Its reminders and escalations stay pending; the later session owes its own call.
    assert set(call.reminders.values_list("pk", flat=True)) == reminders
    assert set(call.reminders.values_list("state", flat=True)) == {Reminder.State.PENDING}
    assert [f.code for f in created if f.code == rule.code] == [rule.code]
    # Compliance counts it: overdue now, and not completed within its window.
    assert (call.pk in figure("followups-overdue", clinic.site, call.due_at, now=at)) is overdue
    in_window = figure("followups-in-window", clinic.site, call.due_at, now=at)
    assert in_window.get(call.pk) == ("Open past its window" if overdue else None)


def test_f1a_f5_the_overdue_call_escalates_after_the_next_session_until_closed_with_a_reason(
    clinic, administrator, time_machine
):
    time_machine.move_to(timezone.now(), tick=False)
    course = clinic.course("iv-ketamine")
    rule = call_rule(course)
    first = dosed(clinic, course, at=timezone.now(), time_machine=time_machine)
    plan_at_discharge(
        first, at=first.dose_started_at + DISCHARGE_AFTER, signer=clinic.anesthesiologist,
        time_machine=time_machine,
    )  # fmt: skip
    call = FollowUp.objects.get(session=first, code=rule.code)
    later = dosed(clinic, course, at=call.window_ends_at + SECOND, time_machine=time_machine)
    plan_at_discharge(
        later, at=later.dose_started_at + DISCHARGE_AFTER, signer=clinic.anesthesiologist,
        time_machine=time_machine,
    )  # fmt: skip
    steps = {step["overdue_hours"]: step["role"] for step in call.escalation}
    first_step, second_step = sorted(steps)

    def sent_to(hours: int) -> set[int]:
        return set(
            call.reminders.filter(
                idempotency_key__contains=f":escalate:{hours}h:", state=Reminder.State.SENT
            ).values_list("recipient", flat=True)
        )

    # Just before the first escalation nothing has gone; at it, the psychiatrist is told.
    escalate_at = call.window_ends_at + timedelta(hours=first_step)
    services.sweep_due_reminders(now=escalate_at - SECOND)
    assert sent_to(first_step) == set()
    services.sweep_due_reminders(now=escalate_at)
    assert sent_to(first_step) == {course.responsible_psychiatrist.pk}
    services.sweep_due_reminders(now=call.window_ends_at + timedelta(hours=second_step))
    assert administrator.pk in sent_to(second_step)

    time_machine.move_to(call.window_ends_at + timedelta(hours=second_step, minutes=5))
    with pytest.raises(ValidationError):
        services.followup_mark_missed(followup=call, acting_user=clinic.nurse, reason="  ")
    services.followup_mark_missed(
        followup=call, acting_user=clinic.nurse, reason="No answer on three attempts"
    )
    call.refresh_from_db()
    assert (call.state, call.state_reason) == (FollowUp.State.MISSED, "No answer on three attempts")
    assert not call.reminders.filter(state=Reminder.State.PENDING).exists()


@pytest.mark.parametrize(
    "next_discharge_from_due",
    [
        pytest.param(-SECOND, id="review-due-minus-1s"),
        pytest.param(timedelta(0), id="at-review-due"),
        pytest.param(SECOND, id="review-due-plus-1s"),
    ],
)
def test_f1a_a_later_session_keeps_the_open_7_day_review_as_planned_and_adds_none(
    clinic, time_machine, next_discharge_from_due
):
    """Decided for a rule counted from the discharge and not owed per session: the open review
    is neither cancelled nor moved later, and the later session plans no second one."""
    time_machine.move_to(timezone.now(), tick=False)
    course = clinic.course("iv-ketamine")
    (rule,) = [r for r in course.protocol_version.parsed.followups if r.code == "day7_review"]
    assert not rule.per_session and rule.anchor == "discharge"
    first = dosed(clinic, course, at=timezone.now(), time_machine=time_machine)
    plan_at_discharge(
        first, at=first.dose_started_at + DISCHARGE_AFTER, signer=clinic.anesthesiologist,
        time_machine=time_machine,
    )  # fmt: skip
    review = FollowUp.objects.get(course=course, code=rule.code)
    planned = (review.pk, review.due_at, review.window_ends_at, review.state)

    at = review.due_at + next_discharge_from_due
    later = dosed(clinic, course, at=at - DISCHARGE_AFTER, time_machine=time_machine)
    plan_at_discharge(later, at=at, signer=clinic.anesthesiologist, time_machine=time_machine)

    (kept,) = FollowUp.objects.filter(course=course, code=rule.code)
    assert (kept.pk, kept.due_at, kept.window_ends_at, kept.state) == planned
    assert set(kept.reminders.values_list("state", flat=True)) == {Reminder.State.PENDING}


def test_f1a_no_sequence_of_sessions_cancels_or_moves_a_follow_up(clinic, time_machine):
    """Twelve sessions at irregular gaps (1 to 5 days): every follow-up keeps the due time it
    was planned with, and none is ever cancelled."""
    time_machine.move_to(timezone.now(), tick=False)
    course = clinic.course("iv-ketamine")
    seen: dict[int, tuple] = {}
    at = timezone.now()
    for gap in (1, 2, 5, 3, 1, 4, 2, 2, 1, 1, 1, 1):
        at += timedelta(days=gap)
        session = dosed(clinic, course, at=at, time_machine=time_machine)
        plan_at_discharge(
            session, at=at + DISCHARGE_AFTER, signer=clinic.anesthesiologist,
            time_machine=time_machine,
        )  # fmt: skip
        for f in FollowUp.objects.filter(course=course):
            assert seen.setdefault(f.pk, (f.due_at, f.window_ends_at)) == (
                f.due_at,
                f.window_ends_at,
            )
            assert f.state == FollowUp.State.OPEN
    assert FollowUp.objects.filter(course=course, code="next_day_call").count() == 12
