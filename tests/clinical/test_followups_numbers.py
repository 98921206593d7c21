"""Clinical numbers of Step 3 come from the protocol version, and services validate like forms
(SPEC "rules as data", §M4, §F2, §F6, §N5; issue 10 "Protocol documents", "Input at the service
layer").

- Follow-up blood pressures are judged against the course's protocol plausibility limits
  (SPEC §M4), in the form and in the service alike: at each limit, just inside, just outside.
- "BP if in person" (SPEC §F2) applies to the follow-ups whose rule says so
  (`requires_bp_in_person`), stored on the follow-up when planned; not to codes starting "gp".
- The REMS monitoring form is due within the version's `rems_form_due_days` of each esketamine
  session (SPEC §F6, default 7), and compliance judges it by that window (SPEC §C5).
- "Services validate like forms": a blood pressure that is not a whole number is refused with a
  field error, never truncated, and nothing is saved (SPEC §N5).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compliance.selectors import FIGURES, Scope, figure_rows, load_rule_book
from followups import services
from followups.models import REMS_FORM_CODE, FollowUp
from monitoring.models import TreatmentSession
from protocols import instruments
from tests.followups.helpers import dosed, open_followup, plan_at_discharge

pytestmark = pytest.mark.django_db

SECOND = timedelta(seconds=1)
LIMITS = {"sbp": [60, 250], "dbp": [30, 150]}  # a clinic's own, unlike the shipped ones


def rule(course, code: str):
    (found,) = [r for r in course.protocol_version.parsed.followups if r.code == code]
    return found


def set_followup_keys(code: str, **keys):
    def change(document: dict) -> None:
        for item in document["followups"]:
            if item["code"] == code:
                item.update(keys)

    return change


@pytest.fixture
def gp_check(clinic, time_machine) -> FollowUp:
    """The GP physical check of a course on a version with the clinic's own BP limits."""
    time_machine.move_to(timezone.now(), tick=False)

    def own_limits(document: dict) -> None:
        document["plausibility"].update(LIMITS)

    clinic.publish("iv-ketamine", own_limits)
    course = clinic.course("iv-ketamine")
    assert {k: [int(course.protocol_version.parsed.plausibility[k].low),
                int(course.protocol_version.parsed.plausibility[k].high)]
            for k in LIMITS} == LIMITS  # fmt: skip
    return open_followup(course, rule(course, "gp_day28"), due_at=timezone.now())


# Each limit, just inside and just outside; the other pressure keeps DBP below SBP.
BP_EDGES = [
    pytest.param({"sbp": 59, "dbp": 40}, "sbp", id="sbp-low-minus-1"),
    pytest.param({"sbp": 60, "dbp": 40}, None, id="sbp-at-low"),
    pytest.param({"sbp": 61, "dbp": 40}, None, id="sbp-low-plus-1"),
    pytest.param({"sbp": 249, "dbp": 80}, None, id="sbp-high-minus-1"),
    pytest.param({"sbp": 250, "dbp": 80}, None, id="sbp-at-high"),
    pytest.param({"sbp": 251, "dbp": 80}, "sbp", id="sbp-high-plus-1"),
    pytest.param({"sbp": 130, "dbp": 29}, "dbp", id="dbp-low-minus-1"),
    pytest.param({"sbp": 130, "dbp": 30}, None, id="dbp-at-low"),
    pytest.param({"sbp": 200, "dbp": 150}, None, id="dbp-at-high"),
    pytest.param({"sbp": 200, "dbp": 151}, "dbp", id="dbp-high-plus-1"),
]


@pytest.mark.parametrize(("bp", "refused"), BP_EDGES)
def test_m4_the_follow_up_form_takes_its_bp_limits_from_the_courses_protocol(
    gp_check, clinic, gp, client, bp, refused
):
    client.force_login(gp)

    response = client.post(
        reverse("followups:complete", args=[gp_check.pk]),
        {
            "contact_method": "in-person",
            "outcome": "Checked.",
            **{k: str(v) for k, v in bp.items()},
        },
    )

    gp_check.refresh_from_db()
    if refused:
        assert response.status_code == 200
        assert set(response.context["form"].errors) == {refused}
        assert gp_check.state == FollowUp.State.OPEN
    else:
        assert response.status_code == 302
        assert (gp_check.sbp, gp_check.dbp) == (bp["sbp"], bp["dbp"])


@pytest.mark.parametrize(("bp", "refused"), BP_EDGES)
def test_m4_n5_the_service_judges_the_same_limits_as_the_form(gp_check, gp, bp, refused):
    try:
        services.followup_complete(
            followup=gp_check, acting_user=gp, contact_method="in-person", outcome="OK", **bp
        )
    except ValidationError as error:
        assert set(error.message_dict) == {refused}
    else:
        assert refused is None
    gp_check.refresh_from_db()
    assert (gp_check.state == FollowUp.State.COMPLETED) is (refused is None)


def test_m4_the_form_shows_the_protocols_limits_to_the_browser(gp_check, gp, client):
    client.force_login(gp)

    form = client.get(reverse("followups:complete", args=[gp_check.pk])).context["form"]

    for name, (low, high) in LIMITS.items():
        attrs = form.fields[name].widget.attrs
        assert (int(attrs["min"]), int(attrs["max"])) == (low, high)


# --- "BP if in person" follows the rule, stored when planned (SPEC §F2) --------------------------


@pytest.fixture
def bp_by_rule(clinic, time_machine) -> dict[str, FollowUp]:
    """A version in which the 7-day review asks for the BP in person and the GP check does not:
    the rule decides, not a code that starts with "gp"."""
    time_machine.move_to(timezone.now(), tick=False)

    def change(document: dict) -> None:
        set_followup_keys("gp_day28", requires_bp_in_person=False)(document)
        set_followup_keys("day7_review", requires_bp_in_person=True)(document)

    clinic.publish("iv-ketamine", change)
    course = clinic.course("iv-ketamine")
    plan = services.plan_from(course=course, start=timezone.now(), acting_user=clinic.nurse)
    return {f.code: f for f in plan}


@pytest.mark.parametrize(
    ("values", "refused"),
    [
        pytest.param({"contact_method": "in-person"}, True, id="in-person-no-bp"),
        pytest.param({"contact_method": "in-person", "sbp": 130}, True, id="in-person-sbp-only"),
        pytest.param({"contact_method": "in-person", "sbp": 130, "dbp": 80}, False, id="both"),
        pytest.param({"contact_method": "phone"}, False, id="by-phone-no-bp"),
    ],
)
def test_f2_bp_if_in_person_is_required_where_the_rule_stored_on_the_follow_up_says(
    bp_by_rule, clinic, password, values, refused
):
    review, gp_check = bp_by_rule["day7_review"], bp_by_rule["gp_day28"]
    assert (review.requires_bp_in_person, gp_check.requires_bp_in_person) == (True, False)
    given_values = {"outcome": "Seen.", **values}

    # The GP check's rule asks no BP here: never refused for want of one.
    services.followup_complete(followup=gp_check, acting_user=clinic.psychiatrist, **given_values)
    try:
        services.followup_complete(
            followup=review,
            acting_user=clinic.psychiatrist,
            password=password,
            phq9_items=[0] * len(instruments.PHQ9.items),
            gad7_items=[0] * len(instruments.GAD7.items),
            **given_values,
        )
    except ValidationError as error:
        assert refused and "sbp" in error.message_dict
    else:
        assert not refused


# --- The REMS form window is the version's rems_form_due_days (SPEC §F6, §C5) --------------------


@pytest.fixture
def rems_form(clinic, time_machine):
    """An esketamine session on a version whose REMS form is due within 3 days, discharged (its
    row set as the discharge service leaves it) and planned."""
    time_machine.move_to(timezone.now(), tick=False)

    def three_days(document: dict) -> None:
        document["rems_form_due_days"] = 3

    clinic.publish("esketamine-rems", three_days)
    course = clinic.course("esketamine-rems")
    assert course.protocol_version.parsed.rems_form_due_days == 3
    session = dosed(clinic, course, at=timezone.now(), time_machine=time_machine)
    discharged_at = session.dose_started_at + timedelta(hours=2)
    # As session_discharge leaves it (the discharge itself is Step 2's, tested there).
    TreatmentSession._base_manager.filter(pk=session.pk).update(
        status=TreatmentSession.Status.DISCHARGED,
        discharged_at=discharged_at,
        locked_at=discharged_at,
    )
    plan_at_discharge(
        session, at=discharged_at, signer=clinic.psychiatrist, time_machine=time_machine
    )
    return session, discharged_at, FollowUp.objects.get(session=session, code=REMS_FORM_CODE)


@pytest.mark.parametrize(
    ("filed_from_window_end", "in_time"),
    [(-SECOND, True), (timedelta(0), True), (SECOND, False)],
    ids=["3-days-minus-1s", "exactly-3-days", "3-days-plus-1s"],
)
def test_f6_c5_the_rems_form_is_due_within_the_versions_days_of_the_session(
    rems_form, clinic, administrator, time_machine, filed_from_window_end, in_time
):
    session, discharged_at, form = rems_form
    rule_window = timedelta(hours=rule(session.course, REMS_FORM_CODE).window_hours)
    assert form.window_ends_at == discharged_at + timedelta(days=3) != form.due_at + rule_window

    time_machine.move_to(form.window_ends_at + filed_from_window_end, tick=False)
    services.followup_complete(followup=form, acting_user=administrator, outcome="Filed.")

    site = clinic.site
    day = timezone.localtime(discharged_at, site.tzinfo).date()
    scope = Scope(site=site, start=day, end=day, now=timezone.now())
    (row,) = figure_rows(FIGURES["rems-forms"], scope, load_rule_book())
    assert row.pk == session.pk and row.form_id == form.pk  # the form, not the next-day call
    assert row.ok is in_time
    assert row.reason == ("" if in_time else "Filed after its window")
    assert "within 3 / 7 days" in FIGURES["rems-forms"].definition(load_rule_book())


# --- Services validate like forms: whole numbers only (SPEC §N5) ---------------------------------


@pytest.fixture
def call(clinic, time_machine) -> FollowUp:
    time_machine.move_to(timezone.now(), tick=False)
    course = clinic.course("iv-ketamine")
    return open_followup(course, rule(course, "gp_day28"), due_at=timezone.now())


NOT_WHOLE = [120.5, "120.5", Decimal("120.5"), True, "high", "", float("nan"), float("inf"),
             [120], "12O", "1e2"]  # fmt: skip


@pytest.mark.parametrize("field", ["sbp", "dbp"])
@pytest.mark.parametrize("value", NOT_WHOLE, ids=repr)
def test_n5_a_bp_that_is_not_a_whole_number_is_refused_by_the_service_never_truncated(
    call, gp, field, value
):
    values = {"sbp": 130, "dbp": 80, field: value}

    with pytest.raises(ValidationError) as refused:
        services.followup_complete(
            followup=call, acting_user=gp, contact_method="in-person", outcome="OK", **values
        )

    assert field in refused.value.message_dict
    call.refresh_from_db()
    assert (call.state, call.sbp, call.dbp) == (FollowUp.State.OPEN, None, None)


@pytest.mark.parametrize("sbp", [130, "130", " 130 ", 130.0, Decimal("130"), Decimal("130.00")])
def test_n5_a_whole_number_however_typed_is_stored_as_that_number(call, gp, sbp):
    services.followup_complete(
        followup=call, acting_user=gp, contact_method="in-person", outcome="OK", sbp=sbp, dbp=80
    )

    call.refresh_from_db()
    assert call.sbp == 130 and isinstance(call.sbp, int)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)  # fmt: skip
@given(value=st.floats(min_value=50, max_value=300).filter(lambda v: not v.is_integer()))
def test_n5_no_fractional_pressure_is_ever_accepted(call, gp, value):
    with pytest.raises(ValidationError) as refused:
        services.followup_complete(
            followup=call, acting_user=gp, contact_method="in-person", outcome="OK",
            sbp=value, dbp=40,
        )  # fmt: skip

    assert refused.value.message_dict["sbp"] == [services.NOT_A_WHOLE_NUMBER]
    call.refresh_from_db()
    assert call.state == FollowUp.State.OPEN
