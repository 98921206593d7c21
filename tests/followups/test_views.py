"""Step 3 pages (SPEC §F2, §F3, §N3, §N5): the worklist of each role and site with its counts in
the navigation, and the follow-up form: scales only when due and never for the GP, the signed
psychiatric review, the immediate risk alert, field errors with nothing saved.

The clock is frozen at a Tuesday 10:00 in the site's zone (Europe/London, summer time).
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime, time, timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from clinic.middleware import SESSION_KEY
from clinic.models import Notification, RecordLocked, Role, Signature, SignatureFailure
from followups import selectors, services
from followups.models import FollowUp, Reminder
from protocols import instruments
from protocols import services as protocol_services
from tests.factories import PatientFactory, UserFactory
from tests.followups.helpers import open_followup, rules_where

pytestmark = pytest.mark.django_db

LONDON = zoneinfo.ZoneInfo("Europe/London")
NOW = datetime(2027, 6, 15, 10, 0, tzinfo=LONDON)
NO_RISK = {"q1": "no", "q2": "no", "q6": "no"}
PHQ9_NONE = [0] * len(instruments.PHQ9.items)
GAD7_NONE = [0] * len(instruments.GAD7.items)


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def rules(approved_course):
    return approved_course.protocol_version.parsed


def rule_for(rules, role):
    """The role's first follow-up of the plan (for the psychiatrist: the first review)."""
    return rules_where(rules, role=role)[0]


def worklist_url() -> str:
    return reverse("followups:worklist")


def complete_url(followup: FollowUp) -> str:
    return reverse("followups:complete", kwargs={"followup_id": followup.pk})


def scale_fields(code: str, answers: list[int]) -> dict[str, str]:
    return {f"{code}_{i}": str(v) for i, v in enumerate(answers, start=1)}


def cssrs_fields(**answers: str) -> dict[str, str]:
    return {f"cssrs_{key}": value for key, value in answers.items()}


def snapshot(followup: FollowUp) -> tuple:
    """What a refused submission must leave unchanged."""
    followup.refresh_from_db()
    return (
        followup.state,
        followup.history.count(),
        Notification.objects.count(),
        Reminder.objects.count(),
        Signature.objects.count(),
    )


# --- The worklist (SPEC §F3) -----------------------------------------------------------------


@pytest.fixture
def nurse_rows(clock, approved_course, rules, other_site_course, psychiatrist):
    """The nurse's follow-ups at every distance from now, and rows the nurse must not see."""
    nurse_rule = rule_for(rules, Role.NURSE)
    window = timedelta(hours=nurse_rule.window_hours)
    today = NOW.date()
    at = {
        "overdue": NOW - window - timedelta(hours=2),
        "due-now": NOW - timedelta(hours=1),
        "late-tonight": datetime.combine(today, time(23, 0), LONDON),
        # 00:30 tomorrow in London is 23:30 today in UTC: tomorrow for the site.
        "after-midnight": datetime.combine(today + timedelta(days=1), time(0, 30), LONDON),
        "in-3-days": NOW + timedelta(days=3),
        "beyond": NOW + timedelta(days=selectors.UPCOMING_DAYS + 1),
    }
    rows = {
        name: open_followup(approved_course, nurse_rule, due_at=due) for name, due in at.items()
    }
    done = open_followup(approved_course, nurse_rule, due_at=NOW - timedelta(hours=3))
    FollowUp._base_manager.filter(pk=done.pk).update(
        state=FollowUp.State.COMPLETED, completed_at=NOW
    )
    psych_rule = rule_for(rules, Role.PSYCHIATRIST)
    hidden = {
        "completed": done,
        "psychiatrist's": open_followup(
            approved_course, psych_rule, due_at=NOW - timedelta(hours=1), assigned_to=psychiatrist
        ),
        "other site's": open_followup(
            other_site_course, nurse_rule, due_at=NOW - timedelta(hours=1)
        ),
    }
    return rows, hidden


def test_the_worklist_shows_the_nurses_overdue_due_today_and_upcoming_of_their_site_only(
    nurse_rows, nurse, client, other_site_course
):
    rows, hidden = nurse_rows
    client.force_login(nurse)

    response = client.get(worklist_url())

    assert response.status_code == 200
    worklist = response.context["worklist"]
    assert worklist.overdue == [rows["overdue"]]
    assert worklist.due_today == [rows["due-now"], rows["late-tonight"]]
    assert worklist.upcoming == [rows["after-midnight"], rows["in-3-days"]]
    html = response.content.decode()
    for name, count in (("overdue", 1), ("today", 2), ("upcoming", 2)):
        assert f'data-testid="count-{name}">{count}<' in html
    assert html.count('data-testid="worklist-row"') == 5
    for followup in hidden.values():
        assert complete_url(followup) not in html
    assert other_site_course.patient.family_name not in html
    # The navigation counts what needs doing today: overdue and due today.
    (item,) = [i for i in response.context["nav_items"] if i.url == worklist_url()]
    assert item.badge == 3
    assert 'data-testid="nav-count-worklist">3<' in html


def test_the_psychiatrist_sees_the_reviews_of_their_own_courses_only(
    clock, approved_course, rules, psychiatrist, second_psychiatrist, client
):
    review = open_followup(
        approved_course,
        rule_for(rules, Role.PSYCHIATRIST),
        due_at=NOW - timedelta(hours=1),
        assigned_to=psychiatrist,
    )

    client.force_login(psychiatrist)
    assert client.get(worklist_url()).context["worklist"].due_today == [review]
    client.force_login(second_psychiatrist)
    response = client.get(worklist_url())
    assert response.context["worklist"].due_today == []
    assert complete_url(review) not in response.content.decode()


def test_a_nurse_of_two_sites_sees_the_current_site_or_all_of_hers(
    nurse_rows, nurse, other_site, client
):
    rows, hidden = nurse_rows
    nurse.sites.add(other_site)
    client.force_login(nurse)
    session = client.session
    session[SESSION_KEY] = rows["due-now"].site_id
    session.save()

    current = client.get(worklist_url()).context["worklist"]
    everywhere = client.get(worklist_url(), {"site": "all"}).context["worklist"]

    assert hidden["other site's"] not in current.due_today
    assert everywhere.due_today == sorted(
        [rows["due-now"], rows["late-tonight"], hidden["other site's"]], key=lambda f: f.due_at
    )


def test_the_worklist_shows_due_times_in_the_sites_zone_with_its_offset(call, nurse, client):
    client.force_login(nurse)

    html = client.get(worklist_url()).content.decode()

    rows = [r.split("</tr>")[0] for r in html.split('data-testid="worklist-row"')[1:]]
    (row,) = [r for r in rows if complete_url(call) in r]
    local = call.due_at.astimezone(LONDON)
    assert local.strftime("%H:%M") in row
    assert local.strftime("%Z") in row or local.strftime("%z") in row


def measure_worklist(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(worklist_url())
    assert response.status_code == 200
    return len(queries)


# Session, user, sites, site, permissions (2), roles, the rows, consents, the two nav badges.
WORKLIST_QUERIES = 11


def test_the_worklist_query_count_does_not_grow_with_the_follow_ups(
    clock, approved_course, rules, site, nurse, client, django_assert_num_queries
):
    nurse_rule = rule_for(rules, Role.NURSE)

    def add(n: int) -> None:
        for i in range(n):
            course = protocol_services.course_start(
                patient=PatientFactory(home_site=site, created_by=nurse),
                protocol=approved_course.protocol_version.protocol,
                acting_user=nurse,
                indication=approved_course.indication,
                responsible_psychiatrist=approved_course.responsible_psychiatrist,
                planned_sessions=1,
            )
            open_followup(course, nurse_rule, due_at=NOW + timedelta(hours=i - n // 2))

    client.force_login(nurse)
    add(3)
    few = measure_worklist(client)
    add(37)
    with django_assert_num_queries(WORKLIST_QUERIES):
        many = measure_worklist(client)

    shown = client.get(worklist_url()).context["worklist"]
    assert len(shown.overdue) + len(shown.due_today) + len(shown.upcoming) == 40
    assert many == few


# Session, user, sites, site, permissions (2), roles, the rows, the GAD-7 flags (SPEC §F2), and
# the three navigation badges (worklist, sign-off queue, notifications).
PSYCHIATRIST_WORKLIST_QUERIES = 12


def test_the_psychiatrists_worklist_query_count_does_not_grow_with_the_gad7_flags(
    clock, approved_course, rules, site, nurse, psychiatrist, client, django_assert_num_queries
):
    review_rule = next(r for r in rules.followups if "gad7" in r.instruments)

    def add(n: int) -> None:
        for _ in range(n):
            course = protocol_services.course_start(
                patient=PatientFactory(home_site=site, created_by=nurse),
                protocol=approved_course.protocol_version.protocol,
                acting_user=nurse,
                indication=approved_course.indication,
                responsible_psychiatrist=psychiatrist,
                planned_sessions=1,
            )
            flagged = open_followup(course, review_rule, due_at=NOW, assigned_to=psychiatrist)
            FollowUp._base_manager.filter(pk=flagged.pk).update(
                state=FollowUp.State.COMPLETED,
                completed_at=NOW,
                gad7_total=15,
                gad7_evaluation_flag=True,
            )

    client.force_login(psychiatrist)
    add(2)
    few = measure_worklist(client)
    add(25)
    with django_assert_num_queries(PSYCHIATRIST_WORKLIST_QUERIES):
        many = measure_worklist(client)

    assert len(client.get(worklist_url()).context["worklist"].gad7_flags) == 27
    assert many == few


# --- The follow-up form: who records what (SPEC §U, §F2) ----------------------------------------


@pytest.fixture
def gp_check(clock, approved_course, rules):
    return open_followup(approved_course, rule_for(rules, Role.GP), due_at=NOW)


@pytest.fixture
def review(clock, approved_course, rules, psychiatrist):
    rule = next(r for r in rules.followups if r.signed_by_psychiatrist and "phq9" in r.instruments)
    return open_followup(approved_course, rule, due_at=NOW, assigned_to=psychiatrist)


@pytest.fixture
def call(clock, approved_course, rules):
    return open_followup(approved_course, rule_for(rules, Role.NURSE), due_at=NOW)


PSYCHIATRIC_PREFIXES = ("phq9_", "gad7_", "cssrs_")


def test_the_gp_form_asks_no_psychiatric_scale_and_ignores_one_posted(gp_check, gp, client):
    client.force_login(gp)

    form = client.get(complete_url(gp_check)).context["form"]
    assert not [name for name in form.fields if name.startswith(PSYCHIATRIC_PREFIXES)]
    response = client.post(
        complete_url(gp_check),
        {
            "contact_method": "in-person",
            "sbp": "132",
            "dbp": "84",
            "outcome": "BP fine, no urinary symptoms.",
            **scale_fields("phq9", [3] * len(instruments.PHQ9.items)),
            **cssrs_fields(q1="yes", q2="yes", q3="yes", q4="yes", q5="yes", q6="no"),
        },
    )

    assert response.status_code == 302
    gp_check.refresh_from_db()
    assert gp_check.state == FollowUp.State.COMPLETED
    assert (gp_check.sbp, gp_check.dbp) == (132, 84)
    assert (gp_check.phq9_items, gp_check.cssrs_answers, gp_check.cssrs_risk) == (None, None, "")
    assert not gp_check.risk_flagged
    assert not Notification.objects.filter(kind=Notification.Kind.FOLLOWUP_RISK).exists()


def test_the_gp_cannot_record_psychiatric_scales_through_the_service(gp_check, gp):
    before = snapshot(gp_check)

    with pytest.raises(ValidationError) as caught:
        services.followup_complete(
            followup=gp_check,
            acting_user=gp,
            contact_method="phone",
            outcome="Fine",
            phq9_items=PHQ9_NONE,
            cssrs_answers={"q1": False, "q2": False, "q6": False},
        )

    assert {"phq9_items", "cssrs_answers"} <= set(caught.value.message_dict)
    assert snapshot(gp_check) == before


def test_the_gp_cannot_complete_a_psychiatric_review(review, gp, client):
    client.force_login(gp)
    before = snapshot(review)

    response = client.post(
        complete_url(review), {"contact_method": "phone", "outcome": "x", "password": "x"}
    )

    assert response.status_code == 403
    assert snapshot(review) == before


# --- The signed psychiatric review (SPEC §S1–S3) -------------------------------------------------


def review_form(password: str, phq9=PHQ9_NONE) -> dict[str, str]:
    return {
        "contact_method": "video",
        "outcome": "Responding; continue the course.",
        **scale_fields("phq9", phq9),
        **scale_fields("gad7", GAD7_NONE),
        **cssrs_fields(**NO_RISK),
        "password": password,
    }


def test_the_review_form_asks_the_scales_that_are_due_and_the_password(
    review, psychiatrist, client
):
    client.force_login(psychiatrist)

    form = client.get(complete_url(review)).context["form"]

    names = set(form.fields)
    assert set(scale_fields("phq9", PHQ9_NONE)) <= names
    assert set(scale_fields("gad7", GAD7_NONE)) <= names
    assert "password" in names


def test_a_review_with_a_wrong_password_records_only_the_failed_attempt(
    review, psychiatrist, client
):
    client.force_login(psychiatrist)
    before = snapshot(review)

    response = client.post(complete_url(review), review_form("not-my-password"))

    assert response.status_code == 200
    assert "password" in response.context["form"].errors
    assert snapshot(review) == before
    failures = SignatureFailure.objects.filter(
        content_type=ContentType.objects.get_for_model(FollowUp), object_id=review.pk
    )
    assert list(failures.values_list("user", flat=True)) == [psychiatrist.pk]
    assert review.locked_at is None


def test_a_signed_review_is_completed_signed_reviewed_and_locked(
    review, psychiatrist, password, client
):
    client.force_login(psychiatrist)

    response = client.post(complete_url(review), review_form(password))

    assert response.status_code == 302
    review.refresh_from_db()
    assert review.state == FollowUp.State.COMPLETED
    assert (review.phq9_total, review.gad7_total, review.cssrs_risk) == (0, 0, "none")
    assert review.locked_at is not None
    (signature,) = Signature.objects.filter(
        content_type=ContentType.objects.get_for_model(FollowUp), object_id=review.pk
    )
    assert signature.signer == psychiatrist
    assert signature.meaning == Signature.Meaning.REVIEWED
    assert signature.printed_name == psychiatrist.printed_name
    with pytest.raises(RecordLocked):
        review.outcome = "Changed afterwards"
        review.save()
    page = client.get(complete_url(review)).content.decode()
    assert "Reviewed" in page
    assert psychiatrist.printed_name in page
    assert 'data-testid="signature-invalid"' not in page


# --- Risk answers alert the psychiatrist at once (SPEC §F2) --------------------------------------


def risk_alerts(psychiatrist):
    return Notification.objects.filter(recipient=psychiatrist, kind=Notification.Kind.FOLLOWUP_RISK)


def test_phq9_item_9_above_0_alerts_the_psychiatrist_at_once(
    review, psychiatrist, password, client
):
    client.force_login(psychiatrist)
    phq9 = list(PHQ9_NONE)
    phq9[instruments.PHQ9_SELF_HARM_ITEM - 1] = 1

    response = client.post(complete_url(review), review_form(password, phq9=phq9))

    assert response.status_code == 302
    review.refresh_from_db()
    assert review.risk_flagged
    (alert,) = risk_alerts(psychiatrist)
    assert alert.url == complete_url(review)


CSSRS_CASES = [
    pytest.param({"q1": "yes", "q2": "yes", "q3": "yes", "q4": "no", "q5": "no", "q6": "no"}, True,
                 id="moderate"),
    pytest.param({"q1": "yes", "q2": "yes", "q3": "yes", "q4": "yes", "q5": "no", "q6": "no"}, True,
                 id="high"),
    pytest.param({"q1": "no", "q2": "no", "q6": "yes", "q6_recent": "yes"}, True,
                 id="high-recent-behaviour"),
    pytest.param({"q1": "yes", "q2": "no", "q6": "no"}, False, id="low"),
    pytest.param(NO_RISK, False, id="none"),
]  # fmt: skip


@pytest.mark.parametrize(("answers", "alerted"), CSSRS_CASES)
def test_a_moderate_or_high_cssrs_at_the_call_alerts_the_psychiatrist_at_once(
    call, nurse, psychiatrist, client, answers, alerted
):
    client.force_login(nurse)

    response = client.post(
        complete_url(call),
        {"contact_method": "phone", "outcome": "Spoke with her.", **cssrs_fields(**answers)},
    )

    assert response.status_code == 302
    call.refresh_from_db()
    assert call.state == FollowUp.State.COMPLETED
    assert call.risk_flagged is alerted
    assert risk_alerts(psychiatrist).count() == (1 if alerted else 0)


# --- PHQ-9 / GAD-7 not again within 14 days (SPEC §F2) ---------------------------------------


def test_the_scales_are_not_asked_again_within_their_recall_period(
    review, approved_course, rules, psychiatrist, password, client, time_machine
):
    client.force_login(psychiatrist)
    assert client.post(complete_url(review), review_form(password)).status_code == 302
    review.refresh_from_db()
    later_rule = next(
        r for r in rules.followups if "phq9" in r.instruments and r.code != review.code
    )
    later = open_followup(
        approved_course, later_rule, due_at=NOW + timedelta(days=21), assigned_to=psychiatrist
    )
    recall = timedelta(days=instruments.SCALE_RECALL_DAYS)
    without_scales = {
        k: v for k, v in review_form(password).items() if not k.startswith(("phq9_", "gad7_"))
    }

    time_machine.move_to(review.completed_at + recall - timedelta(minutes=1), tick=False)
    client.force_login(psychiatrist)  # a new day's session
    assert services.scales_due(later) == []
    form = client.get(complete_url(later)).context["form"]
    assert not [n for n in form.fields if n.startswith(("phq9_", "gad7_"))]

    time_machine.move_to(review.completed_at + recall + timedelta(minutes=1), tick=False)
    client.force_login(psychiatrist)
    assert services.scales_due(later) == ["phq9", "gad7"]
    before = snapshot(later)
    response = client.post(complete_url(later), without_scales)
    assert response.status_code == 200
    errors = " ".join(response.context["form"].non_field_errors())
    assert f"{instruments.PHQ9.name} is due" in errors
    assert f"{instruments.GAD7.name} is due" in errors
    assert snapshot(later) == before

    # Within the recall period the review is completed without them.
    time_machine.move_to(review.completed_at + recall - timedelta(minutes=1), tick=False)
    client.force_login(psychiatrist)
    assert client.post(complete_url(later), without_scales).status_code == 302
    later.refresh_from_db()
    assert (later.state, later.phq9_items, later.gad7_items) == (
        FollowUp.State.COMPLETED,
        None,
        None,
    )


# --- Bad input: field errors, nothing saved (SPEC §N5) -----------------------------------------


def bad_input_cases():
    return [
        pytest.param({"contact_method": ""}, "contact_method", id="no-contact-method"),
        pytest.param({"outcome": "  "}, "outcome", id="no-outcome"),
        pytest.param({"sbp": "high", "dbp": "80"}, "sbp", id="bp-not-a-number"),
        pytest.param(
            {"cssrs_q2": "no", "cssrs_q3": "yes"}, "cssrs_q3", id="cssrs-skip-logic-violated"
        ),
        pytest.param({"cssrs_q2": "yes"}, "cssrs_q3", id="cssrs-follow-up-unanswered"),
        pytest.param({"cssrs_q6": "no", "cssrs_q6_recent": "yes"}, "cssrs_q6_recent",
                     id="cssrs-recent-without-behaviour"),
    ]  # fmt: skip


@pytest.mark.parametrize(("change", "field"), bad_input_cases())
def test_bad_input_gets_a_field_error_and_saves_nothing(call, nurse, client, change, field):
    client.force_login(nurse)
    before = snapshot(call)
    data = {"contact_method": "phone", "outcome": "Spoke with him.", **cssrs_fields(**NO_RISK)}
    data.update(change)

    response = client.post(complete_url(call), {k: v for k, v in data.items() if v != ""})

    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert snapshot(call) == before


@pytest.mark.parametrize("field", ["sbp", "dbp"])
@pytest.mark.parametrize("side", ["low", "high"])
def test_a_blood_pressure_outside_the_plausible_range_gets_a_field_error(
    gp_check, gp, rules, client, field, side
):
    limit = rules.plausibility[field]
    value = int(limit.low) - 1 if side == "low" else int(limit.high) + 1
    other = {"sbp": "130", "dbp": "80"}
    client.force_login(gp)
    before = snapshot(gp_check)

    response = client.post(
        complete_url(gp_check),
        {"contact_method": "in-person", "outcome": "Checked.", **other, field: str(value)},
    )

    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert snapshot(gp_check) == before


def test_a_diastolic_pressure_not_below_the_systolic_gets_a_field_error(gp_check, gp, client):
    client.force_login(gp)
    before = snapshot(gp_check)

    response = client.post(
        complete_url(gp_check),
        {"contact_method": "in-person", "outcome": "Checked.", "sbp": "120", "dbp": "130"},
    )

    assert response.status_code == 200
    assert "dbp" in response.context["form"].errors
    assert snapshot(gp_check) == before


def test_an_in_person_gp_check_needs_the_blood_pressure(gp_check, gp, client):
    client.force_login(gp)
    before = snapshot(gp_check)

    response = client.post(
        complete_url(gp_check), {"contact_method": "in-person", "outcome": "Checked."}
    )

    assert response.status_code == 200
    assert "sbp" in response.context["form"].errors
    assert snapshot(gp_check) == before


# --- Access (STYLE: every mutating view) -----------------------------------------------------


def test_the_form_redirects_the_anonymous_to_the_login(call, client):
    response = client.get(complete_url(call))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_the_form_answers_404_outside_the_users_sites(call, outsider, client):
    client.force_login(outsider)
    before = snapshot(call)

    assert client.get(complete_url(call)).status_code == 404
    assert client.post(complete_url(call), {"contact_method": "phone"}).status_code == 404
    assert snapshot(call) == before


def test_the_anesthesiologist_may_not_complete_a_follow_up(call, anesthesiologist, client):
    client.force_login(anesthesiologist)
    before = snapshot(call)

    response = client.post(complete_url(call), {"contact_method": "phone", "outcome": "x"})

    assert response.status_code == 403
    assert snapshot(call) == before


def test_a_nurse_cannot_complete_the_gps_check(gp_check, nurse, client):
    client.force_login(nurse)
    before = snapshot(gp_check)

    response = client.post(
        complete_url(gp_check),
        {"contact_method": "in-person", "sbp": "120", "dbp": "80", "outcome": "x"},
    )

    assert response.status_code == 403
    assert snapshot(gp_check) == before


def test_the_worklist_refuses_a_post(nurse, client):
    client.force_login(nurse)

    assert client.post(worklist_url()).status_code == 405


def test_a_gp_of_another_site_does_not_see_the_worklist_rows(gp_check, other_site, client):
    outsider_gp = UserFactory(username="gp-elsewhere", roles=[Role.GP], sites=[other_site])
    client.force_login(outsider_gp)

    worklist = client.get(worklist_url()).context["worklist"]

    assert gp_check not in [*worklist.overdue, *worklist.due_today, *worklist.upcoming]


# --- Recording a missed follow-up ---------------------------------------------------------------


def missed_url(followup: FollowUp) -> str:
    return reverse("followups:missed", kwargs={"followup_id": followup.pk})


def test_a_follow_up_recorded_as_missed_keeps_its_reason_and_cancels_its_reminders(
    clock, approved_course, nurse, client
):
    services.plan_from(course=approved_course, start=NOW, acting_user=nurse)
    call = FollowUp.objects.get(course=approved_course, assigned_role=Role.NURSE)
    client.force_login(nurse)

    response = client.post(missed_url(call), {"reason": "No answer on three attempts."})

    assert response.status_code == 302
    call.refresh_from_db()
    assert (call.state, call.state_reason) == (
        FollowUp.State.MISSED,
        "No answer on three attempts.",
    )
    assert call.history.first().history_user == nurse
    assert set(call.reminders.values_list("state", flat=True)) == {Reminder.State.CANCELLED}


def test_a_missed_follow_up_needs_a_reason(call, nurse, client):
    client.force_login(nurse)
    before = snapshot(call)

    response = client.post(missed_url(call), {"reason": "   "})

    assert response.status_code == 200
    assert "reason" in response.context["form"].errors
    assert snapshot(call) == before


@pytest.mark.parametrize(
    ("who", "status"), [("outsider", 404), ("anesthesiologist", 403), (None, 302)]
)
def test_recording_as_missed_is_refused_to_others(call, client, request, who, status):
    if who:
        client.force_login(request.getfixturevalue(who))
    before = snapshot(call)

    response = client.post(missed_url(call), {"reason": "Gone"})

    assert response.status_code == status
    if status == 302:
        assert response["Location"].startswith(reverse("login"))
    assert snapshot(call) == before
