"""The follow-up plan (SPEC §F1, §F1a, §D, §N4): created from the protocol version's rules when a
session is discharged and when a course completes; due times in UTC, right across daylight saving;
a later session's plan never cancels or moves an open follow-up (cadence, not postponement).

Every expectation is read from the rules stored on the course's protocol version (the shipped
defaults of protocols/defaults.py), never repeated here as a literal.
"""

from __future__ import annotations

import copy
import zoneinfo
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from django.utils import timezone

from clinic.models import Role, User
from followups import services
from followups.models import FollowUp, Reminder
from monitoring.models import TreatmentSession
from protocols import instruments
from protocols import services as protocol_services
from protocols.models import TreatmentCourse
from tests.factories import UserFactory
from tests.followups.conftest import approve
from tests.followups.helpers import (
    assert_plan,
    discharge,
    ready_for_discharge,
    reminders_of,
    rule_of,
    rules_where,
    start_iv_session,
)

pytestmark = pytest.mark.django_db

LONDON = zoneinfo.ZoneInfo("Europe/London")
# Saturdays before the last Sunday of October and of March (UK clocks change at 01:00 UTC).
EVE_OF_AUTUMN_CHANGE = datetime(2027, 10, 30, 14, 0, tzinfo=LONDON)
EVE_OF_SPRING_CHANGE = datetime(2027, 3, 27, 14, 0, tzinfo=LONDON)
ONE_HOUR = timedelta(hours=1)


def plan_of(course: TreatmentCourse) -> list[FollowUp]:
    return list(FollowUp.objects.filter(course=course, state=FollowUp.State.OPEN))


# --- Through a real discharge -----------------------------------------------------------------


def test_a_discharge_plans_the_iv_ketamine_follow_ups_from_the_discharge_time(
    dosing, nurse, anesthesiologist, password, time_machine
):
    session = ready_for_discharge(dosing, nurse=nurse, time_machine=time_machine)
    assert not FollowUp.objects.exists()

    session = discharge(session, signer=anesthesiologist, password=password)

    assert session.status == TreatmentSession.Status.DISCHARGED
    followups = list(FollowUp.objects.filter(session=session))
    assert_plan(
        followups,
        rules=session.rules,
        course=session.course,
        start=session.discharged_at,
    )
    # Attributed to the clinician who signed the discharge, with the reason (SPEC §C1).
    for followup in followups:
        created = followup.history.get(history_type="+")
        assert created.history_user == anesthesiologist
        assert created.history_change_reason == "Planned from the protocol"


@pytest.fixture
def clock_on_the_eve_of_the_autumn_change(time_machine):
    """Requested before the course and session fixtures, so that they are made on that day."""
    time_machine.move_to(EVE_OF_AUTUMN_CHANGE - timedelta(hours=3), tick=True)


def test_a_discharge_the_day_before_the_clocks_go_back_plans_the_call_24_hours_later_in_utc(
    clock_on_the_eve_of_the_autumn_change, dosing, nurse, anesthesiologist, password, time_machine
):
    session = ready_for_discharge(dosing, nurse=nurse, time_machine=time_machine)
    session = discharge(session, signer=anesthesiologist, password=password)
    (rule,) = rules_where(session.rules, role=Role.NURSE)
    call = FollowUp.objects.get(session=session, code=rule.code)

    discharged = session.discharged_at.astimezone(LONDON)
    due = call.due_at.astimezone(LONDON)
    assert discharged.date() == EVE_OF_AUTUMN_CHANGE.date()
    # UTC: exactly the rule's offset later. The site's wall clock: the next day, an hour earlier.
    assert call.due_at - session.discharged_at == timedelta(hours=rule.offset_hours)
    assert due.date() == discharged.date() + timedelta(days=1)
    assert (discharged.utcoffset(), due.utcoffset()) == (ONE_HOUR, timedelta(0))
    assert (
        due.replace(tzinfo=None)
        == discharged.replace(tzinfo=None) + timedelta(hours=rule.offset_hours) - ONE_HOUR
    )
    assert_plan(
        list(FollowUp.objects.filter(session=session)),
        rules=session.rules,
        course=session.course,
        start=session.discharged_at,
    )


# --- Both shipped protocols -------------------------------------------------------------------


@pytest.fixture(params=["iv", "esketamine"])
def any_course(request, approved_course, esketamine_course) -> TreatmentCourse:
    return approved_course if request.param == "iv" else esketamine_course


def test_each_shipped_protocol_plans_every_discharge_rule_with_its_role_due_time_and_window(
    any_course, nurse
):
    start = timezone.now()

    created = services.plan_from(course=any_course, start=start, acting_user=nurse)

    assert sorted(f.pk for f in created) == sorted(f.pk for f in plan_of(any_course))
    assert_plan(created, rules=any_course.protocol_version.parsed, course=any_course, start=start)


def test_the_esketamine_induction_scales_repeat_as_the_rule_says_from_the_course_start(
    esketamine_course, nurse
):
    """SPEC §D, §F1a: PHQ-9/GAD-7 every 2 weeks in induction, counted from the course start
    (before any dose, an imported course counts from its creation)."""
    rules = esketamine_course.protocol_version.parsed
    (rule,) = [r for r in rules.followups if r.repeat_every_days]
    assert rule.anchor == "course_start"
    start = timezone.now()

    services.plan_from(course=esketamine_course, start=start, acting_user=nurse)

    rows = sorted(
        (f for f in plan_of(esketamine_course) if rule_of(rules, f) == rule),
        key=lambda f: f.due_at,
    )
    assert rule.repeat_count > 1
    assert len(rows) == rule.repeat_count
    assert rows[0].due_at == esketamine_course.created_at + timedelta(hours=rule.offset_hours)
    gaps = {later.due_at - earlier.due_at for earlier, later in pairwise(rows)}
    assert gaps == {timedelta(days=rule.repeat_every_days)}
    # The scales ask about the last 2 weeks (SPEC §F2): the induction never repeats them sooner.
    assert rule.repeat_every_days >= instruments.SCALE_RECALL_DAYS
    assert {tuple(f.instruments) for f in rows} == {rule.instruments}


@pytest.fixture
def completion_course(esketamine_course, administrator, nurse, psychiatrist, password):
    """A course on an esketamine version whose end-of-induction review is planned when the
    course completes, counted from the completion (how version 1 shipped it): the plan of
    completion rules is tested on it, now that the shipped versions have none."""
    protocol = esketamine_course.protocol_version.protocol
    document = copy.deepcopy(esketamine_course.protocol_version.rules)
    for rule in document["followups"]:
        if rule["code"] == "end_of_induction":
            rule.update(on_course_completion=True, anchor="discharge")
    version = protocol_services.protocol_version_create(
        protocol=protocol, acting_user=administrator, rules=document, change_summary="Test"
    )
    protocol_services.protocol_version_publish(version=version, acting_user=administrator)
    course = protocol_services.course_start(
        patient=esketamine_course.patient,
        protocol=protocol,
        acting_user=nurse,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=psychiatrist,
        planned_sessions=8,
    )
    return approve(course, nurse=nurse, psychiatrist=psychiatrist, password=password)


def test_a_discharge_plan_leaves_out_the_rules_kept_for_course_completion(completion_course, nurse):
    rules = completion_course.protocol_version.parsed
    on_completion = rules_where(rules, on_course_completion=True)
    assert on_completion

    services.plan_from(course=completion_course, start=timezone.now(), acting_user=nurse)

    assert not [f for f in plan_of(completion_course) if rule_of(rules, f) in on_completion]


def test_completing_the_course_plans_the_completion_rules_from_that_moment(
    completion_course, nurse, psychiatrist, time_machine
):
    """SPEC §F1: the plan is made when a course completes; the caller of the completion (the
    Step 3 service) plans it, in the same transaction as the status change."""
    course = completion_course
    rules = course.protocol_version.parsed
    discharge_plan = services.plan_from(course=course, start=timezone.now(), acting_user=nurse)
    services.course_set_status_with_plan(
        course=course, acting_user=psychiatrist, status="paused", reason="Holiday"
    )
    assert len(plan_of(course)) == len(discharge_plan)  # pausing plans nothing
    services.course_set_status_with_plan(
        course=course, acting_user=psychiatrist, status="active", reason=""
    )
    time_machine.move_to(timezone.now() + timedelta(days=30), tick=False)
    completed_at = timezone.now()

    services.course_set_status_with_plan(
        course=course, acting_user=psychiatrist, status="completed", reason=""
    )

    course.refresh_from_db()
    assert course.status == TreatmentCourse.Status.COMPLETED
    new = FollowUp.objects.exclude(pk__in=[f.pk for f in discharge_plan]).filter(course=course)
    assert_plan(list(new), rules=rules, course=course, start=completed_at, on_completion=True)
    # The discharge plan is not touched by the completion.
    assert set(plan_of(course)) == {*discharge_plan, *new}
    for followup in new:
        assert followup.history.get(history_type="+").history_user == psychiatrist


def test_step_1_alone_changes_the_course_status_and_plans_nothing(completion_course, psychiatrist):
    """The import cycle is broken: protocols.services knows nothing of follow-ups."""
    protocol_services.course_set_status(
        course=completion_course, acting_user=psychiatrist, status="completed", reason=""
    )

    assert plan_of(completion_course) == []


def test_a_failed_completion_plan_leaves_the_course_as_it_was(
    completion_course, psychiatrist, monkeypatch
):
    def broken(**kwargs):
        raise RuntimeError("the plan failed")

    monkeypatch.setattr(services, "plan_on_course_completion", broken)

    with pytest.raises(RuntimeError):
        services.course_set_status_with_plan(
            course=completion_course, acting_user=psychiatrist, status="completed", reason=""
        )

    completion_course.refresh_from_db()
    assert completion_course.status == TreatmentCourse.Status.ACTIVE


def test_completing_an_iv_course_plans_only_what_its_rules_keep_for_completion(
    approved_course, psychiatrist, time_machine
):
    time_machine.move_to(timezone.now(), tick=False)
    completed_at = timezone.now()

    services.course_set_status_with_plan(
        course=approved_course, acting_user=psychiatrist, status="completed", reason=""
    )

    assert_plan(
        plan_of(approved_course),
        rules=approved_course.protocol_version.parsed,
        course=approved_course,
        start=completed_at,
        on_completion=True,
    )


# --- Daylight saving (SPEC §N4) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "wall_clock_shift"),
    [
        pytest.param(EVE_OF_AUTUMN_CHANGE, -ONE_HOUR, id="clocks-go-back"),
        pytest.param(EVE_OF_SPRING_CHANGE, ONE_HOUR, id="clocks-go-forward"),
    ],
)
def test_due_times_are_whole_hours_in_utc_across_a_clock_change(
    any_course, nurse, start, wall_clock_shift
):
    rules = any_course.protocol_version.parsed
    assert any_course.patient.home_site.time_zone == "Europe/London"

    # As a discharge gives it: the signature's time, in UTC.
    services.plan_from(course=any_course, start=start.astimezone(UTC), acting_user=nurse)

    (rule,) = rules_where(rules, role=Role.NURSE)
    call = FollowUp.objects.get(course=any_course, code=rule.code)
    due = call.due_at.astimezone(LONDON)
    assert call.due_at - start == timedelta(hours=rule.offset_hours)
    assert due.date() == start.date() + timedelta(days=1)
    assert due.time() == (start.replace(tzinfo=None) + wall_clock_shift).time()
    assert due.utcoffset() - start.utcoffset() == wall_clock_shift
    assert_plan(plan_of(any_course), rules=rules, course=any_course, start=start)


def test_a_plan_from_a_start_in_the_sites_zone_is_still_a_whole_offset_later_in_utc(
    approved_course, nurse
):
    services.plan_from(course=approved_course, start=EVE_OF_AUTUMN_CHANGE, acting_user=nurse)

    for followup in plan_of(approved_course):
        rule = rule_of(approved_course.protocol_version.parsed, followup)
        assert followup.due_at - EVE_OF_AUTUMN_CHANGE == timedelta(hours=rule.offset_hours)


# --- Reminders planned with each follow-up (SPEC §F4, §F5) -----------------------------------


def test_each_follow_up_plans_its_reminders_for_the_people_of_its_role_and_its_escalations(
    approved_course,
    nurse,
    psychiatrist,
    second_psychiatrist,
    gp,
    administrator,
    other_site_staff,
):
    site = approved_course.patient.home_site
    no_email_nurse = UserFactory(
        username="nurse-no-mail", email="", roles=[Role.NURSE], sites=[site]
    )
    away_nurse = UserFactory(
        username="nurse-away", roles=[Role.NURSE], sites=[site], is_active=False
    )
    rules = approved_course.protocol_version.parsed
    start = timezone.now()

    services.plan_from(course=approved_course, start=start, acting_user=nurse)

    def people(role: str) -> set[User]:
        if role == Role.PSYCHIATRIST:
            return {approved_course.responsible_psychiatrist}
        return set(User.objects.filter(groups__name=role, sites=site, is_active=True))

    def channels(user: User) -> set[str]:
        return {Reminder.Channel.IN_APP, *([Reminder.Channel.EMAIL] if user.email else [])}

    for followup in plan_of(approved_course):
        expected = {
            (user.pk, channel, followup.due_at)
            for user in people(followup.assigned_role)
            for channel in channels(user)
        }
        for step in rules.escalation:
            at = followup.window_ends_at + timedelta(hours=step["overdue_hours"])
            expected |= {
                (user.pk, channel, at)
                for user in people(step["role"])
                for channel in channels(user)
            }
        planned = reminders_of(followup)
        assert set(planned.values_list("recipient", "channel", "due_at")) == expected, followup.code
        assert planned.count() == len(expected)  # one row each: the idempotency key
        assert set(planned.values_list("state", flat=True)) == {Reminder.State.PENDING}
    recipients = set(Reminder.objects.values_list("recipient", flat=True))
    assert {nurse.pk, no_email_nurse.pk, psychiatrist.pk, gp.pk, administrator.pk} <= recipients
    outsiders = {second_psychiatrist.pk, away_nurse.pk, *(u.pk for u in other_site_staff.values())}
    assert not recipients & outsiders


# --- A later session's plan never supersedes an open follow-up (SPEC §F1a) --------------------


def test_a_later_sessions_plan_keeps_every_earlier_open_follow_up_and_its_reminders(
    dosing,
    nurse,
    anesthesiologist,
    psychiatrist,
    ketamine_lot,
    password,
    time_machine,
):
    """SPEC §F1a: a new discharge never cancels or moves an open follow-up. Owed per session
    (the next-day call), the later session gets its own; any other kind stays as planned and
    the later session plans none of it while one is open."""
    first = discharge(
        ready_for_discharge(dosing, nurse=nurse, time_machine=time_machine),
        signer=anesthesiologist,
        password=password,
    )
    rules = first.rules
    earlier = {f.code: f for f in FollowUp.objects.filter(session=first)}
    planned = {code: (f.due_at, f.window_ends_at) for code, f in earlier.items()}
    (call_rule,) = rules_where(rules, role=Role.NURSE)
    assert call_rule.per_session
    time_machine.move_to(earlier[call_rule.code].due_at, tick=False)
    services.followup_complete(
        followup=earlier[call_rule.code],
        acting_user=nurse,
        contact_method="phone",
        outcome="Well, slept normally.",
    )
    time_machine.move_to(first.discharged_at + timedelta(days=3), tick=True)

    second = start_iv_session(
        first.course,
        nurse=nurse,
        supervisor=anesthesiologist,
        prescriber=psychiatrist,
        lot=ketamine_lot,
        time_machine=time_machine,
    )
    second = discharge(
        ready_for_discharge(second, nurse=nurse, time_machine=time_machine),
        signer=anesthesiologist,
        password=password,
    )

    # The second session owes its own next-day call, and nothing else is planned again.
    (call,) = FollowUp.objects.filter(session=second)
    assert call.code == call_rule.code
    assert call.due_at == second.discharged_at + timedelta(hours=call_rule.offset_hours)
    for code, old in earlier.items():
        old.refresh_from_db()
        assert (old.due_at, old.window_ends_at) == planned[code], code
        if code == call_rule.code:
            assert old.state == FollowUp.State.COMPLETED
            continue
        assert old.state == FollowUp.State.OPEN, code
        assert set(reminders_of(old).values_list("state", flat=True)) == {Reminder.State.PENDING}
    assert not FollowUp.objects.filter(state=FollowUp.State.CANCELLED).exists()


def test_once_the_open_review_is_closed_the_next_discharge_plans_a_new_one(
    approved_course, nurse, psychiatrist, time_machine
):
    """Decided for discharge-anchored rules not owed per session (SPEC §F1a): an open one is
    kept and none is added; once it is closed, the next discharge plans the next one."""
    time_machine.move_to(timezone.now(), tick=False)
    rules = approved_course.protocol_version.parsed
    review_rule = next(r for r in rules.followups if r.code == "day7_review")
    first_start = timezone.now()
    services.plan_from(course=approved_course, start=first_start, acting_user=nurse)
    (review,) = FollowUp.objects.filter(course=approved_course, code=review_rule.code)

    services.plan_from(
        course=approved_course, start=first_start + timedelta(days=3), acting_user=nurse
    )
    assert list(FollowUp.objects.filter(course=approved_course, code=review_rule.code)) == [review]

    services.followup_mark_missed(followup=review, acting_user=psychiatrist, reason="Abroad")
    later_start = first_start + timedelta(days=10)
    services.plan_from(course=approved_course, start=later_start, acting_user=nurse)

    reviews = FollowUp.objects.filter(course=approved_course, code=review_rule.code)
    assert sorted((f.state, f.due_at) for f in reviews) == sorted(
        [
            (FollowUp.State.MISSED, review.due_at),
            (FollowUp.State.OPEN, later_start + timedelta(hours=review_rule.offset_hours)),
        ]
    )


def test_a_later_esketamine_session_keeps_the_earlier_sessions_rems_form_open(
    esketamine_course, nurse, time_machine
):
    rules = esketamine_course.protocol_version.parsed
    (rems_rule,) = rules_where(rules, role=Role.ADMINISTRATOR)
    first_start = timezone.now()
    services.plan_from(course=esketamine_course, start=first_start, acting_user=nurse)
    # Induction: the next session three days later, inside the first form's window.
    second_start = first_start + timedelta(days=3)
    assert second_start < first_start + timedelta(hours=rems_rule.window_hours)

    services.plan_from(course=esketamine_course, start=second_start, acting_user=nurse)

    forms = FollowUp.objects.filter(course=esketamine_course, code=rems_rule.code)
    assert sorted(f.due_at for f in forms.filter(state=FollowUp.State.OPEN)) == [
        first_start + timedelta(hours=rems_rule.offset_hours),
        second_start + timedelta(hours=rems_rule.offset_hours),
    ]
