"""Cadence, not postponement (SPEC §F1a, §D; issue 10 "Follow-ups").

SPEC §D, esketamine: "PHQ-9/GAD-7 every 2 weeks in induction; end-of-induction review at week 4".
SPEC §F1a: "a recurring follow-up (e.g. PHQ-9 every 2 weeks in induction) keeps its cadence from
the course start; a new discharge never pushes an open one into the future. Reviews tied to a
course week (end-of-induction review at week 4) count from the course start."

"Course start" is the dose start of the course's first dosed session (the first dose is when
treatment, and so its cadence, began); before any dose, the course's creation stands in
(`followups.services.course_start_at`). Elapsed times are real time (SPEC §N4): two weeks are
336 hours, whatever the clocks do in between. Every number is read from the shipped rules.
"""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from followups import services
from followups.models import FollowUp
from protocols.models import TreatmentCourse
from tests.followups.helpers import CLOCK_CHANGES, dosed, local, plan_at_discharge

pytestmark = pytest.mark.django_db

SECOND = timedelta(seconds=1)
DISCHARGE_AFTER = timedelta(hours=2)  # a plausible observation; the rules do not depend on it


def scales_rule(course: TreatmentCourse):
    (rule,) = [r for r in course.protocol_version.parsed.followups if r.repeat_every_days]
    return rule


def review_rule(course: TreatmentCourse):
    (rule,) = [r for r in course.protocol_version.parsed.followups if r.code == "end_of_induction"]
    return rule


def rows_of(course: TreatmentCourse, rule) -> list[FollowUp]:
    return sorted(
        (
            f
            for f in FollowUp.objects.filter(course=course)
            if f.code == rule.code or f.code.startswith(f"{rule.code}-")
        ),
        key=lambda f: f.due_at,
    )


@pytest.fixture(params=list(CLOCK_CHANGES), ids=list(CLOCK_CHANGES))
def zone_and_change(request, site, time_machine):
    """The site in the zone of one clock change; the clock at the Monday 6 days before it, so
    that the first two weeks of the course cross the change. Requested before the clinic, so
    that the patient, consents and course are made on that day."""
    zone, change_day, shift = CLOCK_CHANGES[request.param]
    site.time_zone = zone
    site.save()
    monday = change_day - timedelta(days=6)
    time_machine.move_to(local(zone, monday, 8), tick=False)
    return zone, monday, shift


def test_f1a_d_esketamine_scales_fall_due_every_2_weeks_from_the_course_start_though_sessions_are_twice_weekly(  # noqa: E501
    zone_and_change, clinic, time_machine
):
    """SPEC §D, §F1a. Eight sessions, Monday and Thursday for four weeks, across a clock change:
    the scales fall due at 2 and 4 weeks of the course, planned once, never moved or cancelled."""
    zone, monday, shift = zone_and_change
    course = clinic.course("esketamine-rems")
    rule = scales_rule(course)
    assert rule.anchor == "course_start" and rule.repeat_every_days == 14
    days = [0, 3, 7, 10, 14, 17, 21, 24]
    start = local(zone, monday, 10)

    first_plan = None
    for day in days:
        dose_at = local(zone, monday + timedelta(days=day), 10)
        session = dosed(clinic, course, at=dose_at, time_machine=time_machine)
        plan_at_discharge(
            session, at=dose_at + DISCHARGE_AFTER, signer=clinic.psychiatrist,
            time_machine=time_machine,
        )  # fmt: skip
        rows = rows_of(course, rule)
        if first_plan is None:
            first_plan = [(f.pk, f.due_at, f.window_ends_at) for f in rows]
        # No discharge adds, moves or cancels an occurrence.
        assert [(f.pk, f.due_at, f.window_ends_at) for f in rows] == first_plan, day
        assert {f.state for f in rows} == {FollowUp.State.OPEN}, day

    due = [f.due_at for f in rows_of(course, rule)]
    first_due = start.astimezone(UTC) + timedelta(hours=rule.offset_hours)
    assert due == [
        first_due + timedelta(days=rule.repeat_every_days * n) for n in range(rule.repeat_count)
    ]
    assert due[0] - start == timedelta(weeks=2)
    # On the site's wall clock, two weeks later at a different hour: the clocks changed.
    assert due[0].astimezone(start.tzinfo).utcoffset() - start.utcoffset() == shift
    assert not FollowUp.objects.filter(course=course, state=FollowUp.State.CANCELLED).exists()


@pytest.mark.parametrize("discharge_from_due", [-SECOND, timedelta(0), SECOND],
                         ids=["just-before-due", "at-due", "just-after-due"])  # fmt: skip
def test_f1a_a_discharge_at_the_due_time_of_the_scales_keeps_them_as_planned(
    clinic, time_machine, discharge_from_due
):
    """SPEC §F1a: "a new discharge never pushes an open one into the future" — a discharge just
    before, exactly at and just after the first occurrence falls due."""
    course = clinic.course("esketamine-rems")
    rule = scales_rule(course)
    first = dosed(clinic, course, at=clinic_now(time_machine), time_machine=time_machine)
    plan_at_discharge(
        first, at=first.dose_started_at + DISCHARGE_AFTER, signer=clinic.psychiatrist,
        time_machine=time_machine,
    )  # fmt: skip
    before = [(f.pk, f.due_at, f.window_ends_at, f.state) for f in rows_of(course, rule)]
    scales_due_at = before[0][1]

    later = dosed(
        clinic, course, at=scales_due_at + discharge_from_due - DISCHARGE_AFTER,
        time_machine=time_machine,
    )  # fmt: skip
    plan_at_discharge(
        later, at=scales_due_at + discharge_from_due, signer=clinic.psychiatrist,
        time_machine=time_machine,
    )  # fmt: skip

    assert [(f.pk, f.due_at, f.window_ends_at, f.state) for f in rows_of(course, rule)] == before


def clinic_now(time_machine):
    """Stop the clock where it is: every later step chooses its own time."""
    time_machine.move_to(timezone.now(), tick=False)
    return timezone.now()


@pytest.mark.parametrize("dose_after_creation", [timedelta(days=5), timedelta(0)])
def test_d_the_course_start_is_the_first_dose_not_the_course_creation_nor_the_discharge(
    clinic, time_machine, dose_after_creation
):
    """The course start of SPEC §F1a is the dose start of the course's first dosed session."""
    created = clinic_now(time_machine)
    course = clinic.course("esketamine-rems")
    rule = scales_rule(course)
    dose_at = created + dose_after_creation + timedelta(hours=1)
    session = dosed(clinic, course, at=dose_at, time_machine=time_machine)

    plan_at_discharge(
        session, at=dose_at + DISCHARGE_AFTER, signer=clinic.psychiatrist,
        time_machine=time_machine,
    )  # fmt: skip

    assert services.course_start_at(course) == dose_at
    (first, *_) = rows_of(course, rule)
    assert first.due_at == dose_at + timedelta(hours=rule.offset_hours)
    assert first.anchor == FollowUp.Anchor.COURSE_START


def test_f1a_before_any_dose_an_imported_course_counts_from_its_creation(clinic, time_machine):
    course = clinic.course("esketamine-rems")
    rule = scales_rule(course)
    time_machine.move_to(course.created_at + timedelta(days=2), tick=False)

    services.plan_from(course=course, start=course.created_at, acting_user=clinic.psychiatrist)

    (first, *_) = rows_of(course, rule)
    assert services.course_start_at(course) == course.created_at
    assert first.due_at == course.created_at + timedelta(hours=rule.offset_hours)


def test_f1a_closed_occurrences_are_not_planned_again_by_a_later_discharge(clinic, time_machine):
    """Planned once per course: a later discharge creates none again, also once they are done
    (or missed) — otherwise the cadence would restart from that discharge."""
    course = clinic.course("esketamine-rems")
    rule = scales_rule(course)
    first = dosed(clinic, course, at=clinic_now(time_machine), time_machine=time_machine)
    plan_at_discharge(
        first, at=first.dose_started_at + DISCHARGE_AFTER, signer=clinic.psychiatrist,
        time_machine=time_machine,
    )  # fmt: skip
    one, two = rows_of(course, rule)
    time_machine.move_to(one.due_at, tick=False)
    services.followup_mark_missed(followup=one, acting_user=clinic.psychiatrist, reason="Away")
    services.followup_mark_missed(followup=two, acting_user=clinic.psychiatrist, reason="Away")

    later = dosed(clinic, course, at=one.due_at + timedelta(hours=1), time_machine=time_machine)
    created = plan_at_discharge(
        later, at=later.dose_started_at + DISCHARGE_AFTER, signer=clinic.psychiatrist,
        time_machine=time_machine,
    )  # fmt: skip

    assert rows_of(course, rule) == [one, two]
    assert not [f for f in created if f.code.startswith(rule.code)]


def test_f1a_the_database_refuses_a_second_course_anchored_occurrence(clinic, time_machine):
    """The once-per-course rule is also a constraint: no code path can plan it twice."""
    course = clinic.course("esketamine-rems")
    services.plan_from(course=course, start=course.created_at, acting_user=clinic.psychiatrist)
    (first, *_) = rows_of(course, scales_rule(course))
    duplicate = FollowUp.objects.get(pk=first.pk)
    duplicate.pk = None
    duplicate.session = None

    with pytest.raises(IntegrityError), transaction.atomic():
        duplicate.save()


# --- The end-of-induction review at week 4 (SPEC §D, §F1a) ---------------------------------------


def test_d_f1a_the_end_of_induction_review_falls_due_672_hours_after_the_course_start_planned_at_the_first_discharge(  # noqa: E501
    zone_and_change, clinic, time_machine
):
    zone, monday, shift = zone_and_change
    course = clinic.course("esketamine-rems")
    rule = review_rule(course)
    assert rule.anchor == "course_start" and not rule.on_course_completion
    start = local(zone, monday, 10)
    first = dosed(clinic, course, at=start, time_machine=time_machine)

    plan_at_discharge(
        first, at=start + DISCHARGE_AFTER, signer=clinic.psychiatrist, time_machine=time_machine
    )

    (review,) = rows_of(course, rule)
    assert review.session_id == first.pk  # planned at the first discharge
    assert review.due_at == start.astimezone(UTC) + timedelta(hours=rule.offset_hours)
    assert review.due_at - start == timedelta(weeks=4)
    assert review.due_at.astimezone(start.tzinfo).utcoffset() - start.utcoffset() == shift
    # The edge: scheduled a second before week 4, due at it and just after; overdue only once
    # its window has ended.
    assert review.display_status(review.due_at - SECOND) == "scheduled"
    assert review.display_status(review.due_at) == "due"
    assert review.display_status(review.due_at + SECOND) == "due"
    assert review.display_status(review.window_ends_at) == "due"
    assert review.display_status(review.window_ends_at + SECOND) == "overdue"


def test_d_f1a_later_sessions_and_the_course_completion_never_move_the_week_4_review(
    clinic, time_machine
):
    """Not "4 weeks after completion": completing the course (here at week 6, after eight
    sessions) plans no second review and moves none."""
    course = clinic.course("esketamine-rems")
    rule = review_rule(course)
    start = clinic_now(time_machine)
    for day in (0, 3, 7, 10, 14, 17, 21, 24):
        session = dosed(clinic, course, at=start + timedelta(days=day), time_machine=time_machine)
        plan_at_discharge(
            session, at=session.dose_started_at + DISCHARGE_AFTER, signer=clinic.psychiatrist,
            time_machine=time_machine,
        )  # fmt: skip
    time_machine.move_to(start + timedelta(weeks=6), tick=False)

    services.course_set_status_with_plan(
        course=course, acting_user=clinic.psychiatrist, status="completed", reason=""
    )

    (review,) = rows_of(course, rule)
    assert review.due_at == start + timedelta(hours=rule.offset_hours)
    assert review.state == FollowUp.State.OPEN
