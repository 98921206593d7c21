"""PHQ-9 / GAD-7 at follow-ups (SPEC §F2, §I; issue 10 "Follow-ups", "Input at the service layer").

SPEC §F2: PHQ-9 and GAD-7 "ask about the last 2 weeks: not more often than every 14 days for the
trend ... 'Not more often than every 14 days' means a score exactly 14 days old no longer counts
as recent." The issue's wording, "done within the last 14 days includes exactly 14 days", is read
the same way: an interval of exactly 14 days is allowed, so at 14 days the scales are due again.
Were the two to disagree, SPEC §F2's sentence is the one followed. 14 days are 336 hours of
elapsed time (SPEC §N4), across clock changes too.

SPEC §F2, §I: "GAD-7 ≥ 10 carries a 'further evaluation' flag for the psychiatrist" (instrument
manual: a total of 10 or more warrants evaluation), stored when the follow-up is written, shown
on the follow-up page and the psychiatrist's worklist, as PHQ-9 item 9 is.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from clinic.models import Role
from followups import selectors, services
from followups.models import FollowUp
from protocols import instruments
from tests.factories import UserFactory
from tests.followups.helpers import CLOCK_CHANGES, local, open_followup

pytestmark = pytest.mark.django_db

SECOND = timedelta(seconds=1)
RECALL = timedelta(days=instruments.SCALE_RECALL_DAYS)
NO_RISK = {"q1": False, "q2": False, "q6": False}
PHQ9_NONE = [0] * len(instruments.PHQ9.items)


def gad7_items(total: int) -> list[int]:
    """Seven answers (0–3) adding up to `total`."""
    items, left = [], total
    for _ in instruments.GAD7.items:
        answer = min(3, left)
        items.append(answer)
        left -= answer
    assert left == 0
    return items


def review_rule(course):
    return next(
        r
        for r in course.protocol_version.parsed.followups
        if r.signed_by_psychiatrist and {"phq9", "gad7"} <= set(r.instruments)
    )


def complete_review(followup: FollowUp, clinic, *, gad7_total: int = 0) -> FollowUp:
    return services.followup_complete(
        followup=followup,
        acting_user=clinic.psychiatrist,
        password=clinic.password,
        contact_method=FollowUp.ContactMethod.VIDEO,
        outcome="Reviewed.",
        phq9_items=PHQ9_NONE,
        gad7_items=gad7_items(gad7_total),
        cssrs_answers=NO_RISK,
    )


# --- Not again within 14 days; due again at exactly 14 days (SPEC §F2) ---------------------------


@pytest.fixture(params=list(CLOCK_CHANGES), ids=list(CLOCK_CHANGES))
def scored_before_a_clock_change(request, site, clinic, time_machine):
    """Scales recorded at noon, site time, on the day before a clock change; a later review
    of the same patient."""
    zone, change_day, shift = CLOCK_CHANGES[request.param]
    site.time_zone = zone
    site.save()
    scored_at = local(zone, change_day - timedelta(days=1), 12)
    time_machine.move_to(scored_at, tick=False)
    course = clinic.course("iv-ketamine")
    rule = review_rule(course)
    first = open_followup(course, rule, due_at=scored_at, assigned_to=clinic.psychiatrist)
    first = complete_review(first, clinic)
    later = open_followup(
        course, rule, due_at=scored_at + 3 * RECALL, assigned_to=clinic.psychiatrist
    )
    return first, later, shift


@pytest.mark.parametrize(
    ("from_recall", "due"),
    [
        pytest.param(-SECOND, [], id="14-days-minus-1s-still-recent"),
        pytest.param(timedelta(0), ["phq9", "gad7"], id="exactly-14-days-due-again"),
        pytest.param(SECOND, ["phq9", "gad7"], id="14-days-plus-1s-due"),
    ],
)
def test_f2_a_score_exactly_14_days_old_no_longer_counts_as_recent(
    scored_before_a_clock_change, from_recall, due
):
    first, later, shift = scored_before_a_clock_change
    at = first.completed_at + RECALL + from_recall

    assert services.scales_due(later, at=at) == due
    # 14 days of elapsed time: on the site's wall clock an hour off across the change.
    scored = timezone.localtime(first.completed_at, first.site.tzinfo)
    again = timezone.localtime(first.completed_at + RECALL, first.site.tzinfo)
    assert again.utcoffset() - scored.utcoffset() == shift


@pytest.mark.parametrize(
    ("from_recall", "asked"),
    [(-SECOND, False), (timedelta(0), True), (SECOND, True)],
    ids=["14-days-minus-1s", "exactly-14-days", "14-days-plus-1s"],
)
def test_f2_the_review_form_asks_the_scales_again_from_exactly_14_days(
    clinic, client, time_machine, from_recall, asked
):
    time_machine.move_to(timezone.now(), tick=False)
    course = clinic.course("iv-ketamine")
    rule = review_rule(course)
    first = complete_review(
        open_followup(course, rule, due_at=timezone.now(), assigned_to=clinic.psychiatrist),
        clinic,
    )
    later = open_followup(
        course, rule, due_at=first.completed_at + RECALL, assigned_to=clinic.psychiatrist
    )
    time_machine.move_to(first.completed_at + RECALL + from_recall, tick=False)
    client.force_login(clinic.psychiatrist)

    form = client.get(reverse("followups:complete", args=[later.pk])).context["form"]

    scale_fields = [name for name in form.fields if name.startswith(("phq9_", "gad7_"))]
    assert bool(scale_fields) is asked


# --- GAD-7 >= 10: "further evaluation" (SPEC §F2, §I) --------------------------------------------


@pytest.mark.parametrize(
    ("total", "flagged"),
    [(9, False), (10, True), (11, True)],
    ids=["gad7-9-below", "gad7-10-at", "gad7-11-above"],
)
def test_f2_i_gad7_of_10_or_more_is_flagged_for_further_evaluation_when_written(
    clinic, client, time_machine, total, flagged
):
    time_machine.move_to(timezone.now(), tick=False)
    course = clinic.course("iv-ketamine")
    review = open_followup(
        course, review_rule(course), due_at=timezone.now(), assigned_to=clinic.psychiatrist
    )

    review = complete_review(review, clinic, gad7_total=total)

    review.refresh_from_db()
    assert review.gad7_total == total
    assert review.gad7_evaluation_flag is flagged
    assert review.gad7_evaluation_flag is instruments.gad7_needs_evaluation(total)
    # Shown to the psychiatrist: on the follow-up page and on their worklist.
    client.force_login(clinic.psychiatrist)
    page = client.get(reverse("followups:complete", args=[review.pk])).content.decode()
    assert ('data-testid="gad7-evaluation-flag"' in page) is flagged
    worklist = client.get(reverse("followups:worklist"))
    assert (review in worklist.context["worklist"].gad7_flags) is flagged
    assert ('data-testid="gad7-flag-row"' in worklist.content.decode()) is flagged


def test_f2_the_gad7_flag_stands_until_a_later_gad7_and_only_for_the_responsible_psychiatrist(
    clinic, time_machine
):
    time_machine.move_to(timezone.now(), tick=False)
    course = clinic.course("iv-ketamine")
    rule = review_rule(course)
    flagged = complete_review(
        open_followup(course, rule, due_at=timezone.now(), assigned_to=clinic.psychiatrist),
        clinic,
        gad7_total=12,
    )
    colleague = UserFactory(
        username="psychiatrist-colleague", roles=[Role.PSYCHIATRIST], sites=[clinic.site]
    )
    assert list(selectors.gad7_flags_for_psychiatrist(user=clinic.psychiatrist)) == [flagged]
    assert list(selectors.gad7_flags_for_psychiatrist(user=colleague)) == []

    time_machine.move_to(flagged.completed_at + RECALL, tick=False)
    complete_review(
        open_followup(course, rule, due_at=timezone.now(), assigned_to=clinic.psychiatrist),
        clinic,
        gad7_total=4,
    )

    assert list(selectors.gad7_flags_for_psychiatrist(user=clinic.psychiatrist)) == []
