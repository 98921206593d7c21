"""Bad input through the Step 1 views (SPEC §N5, §A, §S): a field error, or a redirect with an
error message where the view does that, never a server error, and nothing partial saved."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse
from django.utils.html import escape
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from clinic.models import Addendum, Notification, Signature, SignatureFailure
from clinic.signatures import WRONG_PASSWORD
from patients.forms import CONTROL_CHARACTERS
from protocols import instruments, services
from protocols.forms import RULES_NOT_JSON
from protocols.models import Assessment, ProtocolVersion, TreatmentCourse
from tests.factories import TEST_PASSWORD, UserFactory
from tests.protocols.conftest import complete_fields

pytestmark = pytest.mark.django_db

FUZZ = hypothesis_settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

LONG = "x" * 10_000
HOSTILE = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
HOSTILE_ESCAPED = escape(HOSTILE)
CONTROL_SAMPLES = ["NUL \x00 here", "bell \x07", "escape \x1b[31mred", "delete \x7f"]

# Text fields of the assessment form with their model (or form) maximum length.
ASSESSMENT_TEXT_FIELDS = {
    "diagnosis": 300,
    "psychiatric_history": 5000,
    "substance_use": 3000,
    "alcohol_use": 300,
    "medical_history": 5000,
    "current_medications": 3000,
    "allergies": 500,
    "concomitant_notes": 2000,
}
VITALS = ("sbp", "dbp", "hr", "rr", "spo2", "weight_kg")
YES_NO_FIELDS = (
    "psychosis_personal",
    "mania_personal",
    "psychosis_mania_family",
    "benzodiazepines",
    "sedative_hypnotics",
    "psychostimulants",
    "maois",
    "opioids",
)
ITEM_FIELDS = tuple(f"phq9_{i}" for i in range(1, 10)) + tuple(f"gad7_{i}" for i in range(1, 8))
CSSRS_FIELDS = tuple(f"cssrs_{key}" for key, _ in instruments.CSSRS_QUESTIONS)

# Values that have broken number parsing elsewhere.
MALFORMED_NUMBERS = [
    "abc",
    "12.5.1",
    "1e3",
    "--5",
    "0x7f",
    "NaN",
    "Infinity",
    "-Infinity",
    "99999999999999999999999999",
    "1" * 400,
    "١٢٠/٨٠",
    "120/80",
    "7 0",
]


# --- helpers ------------------------------------------------------------------------------------


def _yes_no(value: bool | None) -> str | None:
    return None if value is None else ("yes" if value else "no")


def assessment_post_data(course: TreatmentCourse, **overrides: Any) -> dict[str, str]:
    """The assessment form as a browser posts it, complete and valid; override one field to test
    it (None leaves a field out, as an unanswered radio group)."""
    data: dict[str, str | None] = {}
    for name, value in complete_fields(course).items():
        if name in {"phq9_items", "gad7_items"}:
            code = name.removesuffix("_items")
            data.update({f"{code}_{i}": str(v) for i, v in enumerate(value, start=1)})
        elif name == "cssrs_answers":
            data.update({f"cssrs_{key}": _yes_no(v) for key, v in value.items()})
        elif name == "contraindications":
            for code, answer in value.items():
                data[f"ci_{code}"] = _yes_no(answer["present"])
                data[f"ci_{code}_note"] = answer["note"]
        elif isinstance(value, bool):
            data[name] = _yes_no(value)
        else:
            data[name] = "" if value is None else str(value)
    data.update(overrides)
    return {name: value for name, value in data.items() if value is not None}


def assessment_state(assessment: Assessment) -> dict:
    """Everything a bad post must leave alone: the row, its history, what it sent and signed."""
    return {
        "row": Assessment.objects.filter(pk=assessment.pk).values().get(),
        "history": Assessment.history.filter(id=assessment.pk).count(),
        "notifications": Notification.objects.count(),
        "signatures": Signature.objects.count(),
        "assessments": Assessment.objects.count(),
    }


def assert_field_error(response, field: str, message: str | None = None) -> None:
    """A 200 re-rendering the form with the error next to `field` (and its text, if given)."""
    assert response.status_code == 200, response.status_code
    errors = response.context["form"].errors
    assert field in errors, f"no error on {field}: {errors.as_data()}"
    if message is not None:
        assert message in errors[field], errors[field]
        assert escape(message) in response.content.decode()
    assert f'id="error_1_id_{field}"' in response.content.decode(), "error not shown at the field"


def edit_url(assessment: Assessment) -> str:
    return reverse("protocols:assessment_edit", args=[assessment.pk])


@pytest.fixture
def limits(course):
    return course.protocol_version.parsed.plausibility


@pytest.fixture
def nurse_client(client, nurse):
    client.force_login(nurse)
    return client


@pytest.fixture
def psychiatrist_client(client, psychiatrist):
    client.force_login(psychiatrist)
    return client


@pytest.fixture
def approved(submitted, psychiatrist) -> Assessment:
    return services.assessment_sign(
        assessment=submitted, signer=psychiatrist, password=TEST_PASSWORD, approve=True
    )


def _post_assessment(client, assessment: Assessment, **overrides: Any):
    data = assessment_post_data(assessment.course, **overrides)
    data.setdefault("save", "")
    return client.post(edit_url(assessment), data)


# --- the assessment form: numbers ---------------------------------------------------------------


def test_the_helper_posts_a_form_that_saves(nurse_client, draft):
    response = _post_assessment(nurse_client, draft)
    assert response.status_code == 302
    draft.refresh_from_db()
    assert services.assessment_missing_items(draft) == []


@pytest.mark.parametrize("field", VITALS)
@pytest.mark.parametrize("value", MALFORMED_NUMBERS)
def test_it_refuses_malformed_numbers_in_the_vitals(nurse_client, draft, field, value):
    before = assessment_state(draft)
    response = _post_assessment(nurse_client, draft, **{field: value})
    assert_field_error(response, field)
    assert assessment_state(draft) == before


@pytest.mark.parametrize("field", ["moca_total", "madrs_total"])
@pytest.mark.parametrize("value", ["abc", "-1", "31.5", "1e1", "99999"])
def test_it_refuses_malformed_optional_totals(nurse_client, draft, field, value):
    before = assessment_state(draft)
    response = _post_assessment(nurse_client, draft, **{field: value})
    assert_field_error(response, field)
    assert assessment_state(draft) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("moca_total", str(instruments.TOTAL_RANGES["moca"][1] + 1)),
        ("madrs_total", str(instruments.TOTAL_RANGES["madrs"][1] + 1)),
    ],
)
def test_it_refuses_optional_totals_above_the_instrument_maximum(nurse_client, draft, field, value):
    before = assessment_state(draft)
    response = _post_assessment(nurse_client, draft, **{field: value})
    assert_field_error(response, field)
    assert assessment_state(draft) == before


def _outside(limit, field: str) -> list[str]:
    step = Decimal("0.1") if field == "weight_kg" else Decimal(1)
    return [str(limit.low - step), str(limit.high + step)]


@pytest.mark.parametrize("field", VITALS)
@pytest.mark.parametrize("side", [0, 1], ids=["below", "above"])
def test_it_refuses_vitals_outside_the_protocol_plausibility_limits(
    nurse_client, draft, limits, field, side
):
    limit = limits[field]
    value = _outside(limit, field)[side]
    before = assessment_state(draft)
    response = _post_assessment(nurse_client, draft, **{field: value})
    message = (
        services.PLAUSIBILITY.format(low=limit.low, high=limit.high)
        if Decimal(value) >= 0
        else None  # a negative number is refused by the field itself
    )
    assert_field_error(response, field, message)
    assert assessment_state(draft) == before


@pytest.mark.parametrize("field", ["sbp", "hr", "rr", "spo2", "weight_kg"])
def test_it_accepts_vitals_at_the_plausibility_limits(nurse_client, draft, limits, field):
    for value in (limits[field].low, limits[field].high):
        overrides = {field: str(value)}
        if field == "sbp":
            overrides["dbp"] = str(limits["dbp"].low)
        response = _post_assessment(nurse_client, draft, **overrides)
        assert response.status_code == 302, response.context["form"].errors.as_data()
        draft.refresh_from_db()
        assert Decimal(getattr(draft, field)) == value


@pytest.mark.parametrize("gap", [0, 1, 40])
def test_it_refuses_a_diastolic_pressure_not_below_the_systolic(nurse_client, draft, gap):
    before = assessment_state(draft)
    response = _post_assessment(nurse_client, draft, sbp="120", dbp=str(120 + gap))
    assert_field_error(response, "dbp", services.DBP_NOT_BELOW_SBP)
    assert assessment_state(draft) == before


def test_a_bad_vital_on_a_submitted_assessment_leaves_it_submitted(nurse_client, submitted, limits):
    before = assessment_state(submitted)
    response = _post_assessment(
        nurse_client, submitted, hr=str(limits["hr"].high + 1), diagnosis="changed"
    )
    assert_field_error(response, "hr")
    assert assessment_state(submitted) == before
    submitted.refresh_from_db()
    assert submitted.status == Assessment.Status.SUBMITTED


# --- the assessment form: answers ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["phq9_1", "phq9_9", "gad7_1", "gad7_7"])
@pytest.mark.parametrize("value", ["4", "-1", "27", "1.0", "one", " 2", "0x1", "", "3;4"])
def test_it_refuses_item_answers_outside_0_to_3(nurse_client, draft, field, value):
    before = assessment_state(draft)
    response = _post_assessment(nurse_client, draft, **{field: value})
    if value == "":
        # Blank is "not yet answered", which a draft may be; it is not an error.
        assert response.status_code == 302
        return
    assert_field_error(response, field)
    assert assessment_state(draft) == before


@pytest.mark.parametrize(
    "field", [*YES_NO_FIELDS[:2], "cssrs_q1", "ci_pregnancy", "ketamine_pcp_use", "pregnancy"]
)
@pytest.mark.parametrize("value", ["maybe", "true", "1", "YES", "<b>yes</b>"])
def test_it_refuses_answers_that_are_not_a_choice(nurse_client, draft, field, value):
    before = assessment_state(draft)
    response = _post_assessment(nurse_client, draft, **{field: value})
    assert_field_error(response, field)
    assert assessment_state(draft) == before


@pytest.mark.parametrize("skipped", instruments.CSSRS_SKIPPED)
@pytest.mark.parametrize("answer", ["yes", "no"])
def test_it_refuses_cssrs_answers_that_question_2_skips(nurse_client, draft, skipped, answer):
    before = assessment_state(draft)
    response = _post_assessment(nurse_client, draft, cssrs_q2="no", **{f"cssrs_{skipped}": answer})
    assert_field_error(response, f"cssrs_{skipped}", instruments.CSSRS_SKIP)
    assert assessment_state(draft) == before


def test_it_refuses_the_3_month_question_when_there_was_no_behaviour(nurse_client, draft):
    before = assessment_state(draft)
    response = _post_assessment(nurse_client, draft, cssrs_q6="no", cssrs_q6_recent="yes")
    assert_field_error(response, "cssrs_q6_recent", instruments.CSSRS_RECENT_ONLY_IF_BEHAVIOUR)
    assert assessment_state(draft) == before


def test_a_skip_logic_violation_with_a_positive_item_9_sends_no_notification(nurse_client, draft):
    before = assessment_state(draft)
    response = _post_assessment(nurse_client, draft, phq9_9="2", cssrs_q2="no", cssrs_q3="yes")
    assert_field_error(response, "cssrs_q3", instruments.CSSRS_SKIP)
    assert assessment_state(draft) == before  # no flag, no notification to the psychiatrist


# --- the assessment form: text ------------------------------------------------------------------


@pytest.mark.parametrize("field", [*ASSESSMENT_TEXT_FIELDS, "ci_pregnancy_note"])
def test_it_refuses_over_long_text(nurse_client, draft, field):
    before = assessment_state(draft)
    response = _post_assessment(nurse_client, draft, **{field: LONG})
    assert_field_error(response, field)
    assert assessment_state(draft) == before


@pytest.mark.parametrize("field", [*ASSESSMENT_TEXT_FIELDS, "ci_pregnancy_note"])
@pytest.mark.parametrize("value", CONTROL_SAMPLES)
def test_it_refuses_control_characters_in_text(nurse_client, draft, field, value):
    before = assessment_state(draft)
    response = _post_assessment(nurse_client, draft, **{field: value})
    assert_field_error(response, field)
    if "\x00" not in value:  # Django's own null-character check answers first for NUL
        assert CONTROL_CHARACTERS in response.context["form"].errors[field]
    assert assessment_state(draft) == before


def test_it_keeps_line_breaks_and_tabs_in_text(nurse_client, draft):
    text = "Episode 1:\tsertraline\r\nEpisode 2:\tvenlafaxine"
    response = _post_assessment(nurse_client, draft, psychiatric_history=text)
    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.psychiatric_history == text


def test_html_is_stored_as_typed_and_shown_escaped(nurse_client, client, draft, psychiatrist):
    fields = {name: HOSTILE for name in ASSESSMENT_TEXT_FIELDS}
    response = _post_assessment(nurse_client, draft, ci_pregnancy_note=HOSTILE, **fields)
    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.diagnosis == HOSTILE
    assert draft.contraindications["pregnancy"]["note"] == HOSTILE

    for url in (edit_url(draft), reverse("protocols:assessment_detail", args=[draft.pk])):
        page = nurse_client.get(url).content.decode()
        assert HOSTILE not in page
        assert "<script>alert" not in page
        assert HOSTILE_ESCAPED in page

    # The contraindication note is shown in the summary once it is present.
    _post_assessment(nurse_client, draft, ci_pregnancy="yes", ci_pregnancy_note=HOSTILE, **fields)
    response = nurse_client.post(reverse("protocols:assessment_submit", args=[draft.pk]))
    draft.refresh_from_db()
    assert draft.status == Assessment.Status.SUBMITTED, response
    client.force_login(psychiatrist)
    for url in (
        reverse("protocols:assessment_sign", args=[draft.pk]),
        reverse("protocols:signoff_queue"),
        reverse("patients:chart", args=[draft.patient_id]),
    ):
        page = client.get(url).content.decode()
        assert "<script>alert" not in page
        assert "onerror=alert" not in page.replace(HOSTILE_ESCAPED, "")


# --- the assessment form: property-based ---------------------------------------------------------

TEXT_TARGETS = [*ASSESSMENT_TEXT_FIELDS, "ci_pregnancy_note", "ci_substance_use_disorder_note"]
CHOICE_TARGETS = [
    *VITALS,
    "moca_total",
    "madrs_total",
    *YES_NO_FIELDS,
    "ketamine_pcp_use",
    "pregnancy",
    *ITEM_FIELDS,
    *CSSRS_FIELDS,
    "ci_vascular_aneurysm",
    "ci_pregnancy",
]
ANY_SCALAR = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=50),
    st.sampled_from(["yes", "no", "0", "3", "4", "-0", "1e2", "٣", "１２０", "\x00", ""]),
)


def _stored_text(assessment: Assessment, field: str) -> str:
    if field.startswith("ci_"):
        return assessment.contraindications[field.removeprefix("ci_").removesuffix("_note")]["note"]
    return getattr(assessment, field)


def _assert_plausible(assessment: Assessment, limits) -> None:
    for field in VITALS:
        value = getattr(assessment, field)
        assert value is None or limits[field].contains(value), (field, value)
    if assessment.dbp is not None and assessment.sbp is not None:
        assert assessment.dbp < assessment.sbp
    for items in (assessment.phq9_items, assessment.gad7_items):
        assert all(v in (None, 0, 1, 2, 3) for v in items or [])
    low, high = instruments.TOTAL_RANGES["moca"]
    assert assessment.moca_total is None or low <= assessment.moca_total <= high


@FUZZ
@given(field=st.sampled_from(TEXT_TARGETS), value=st.text(max_size=600))
@example(field="diagnosis", value="\x00")
@example(field="allergies", value="a" * 501)
@example(field="ci_pregnancy_note", value="\u202e" + HOSTILE)
def test_any_text_in_the_assessment_form_is_saved_as_typed_or_refused(
    client, nurse, draft, field, value
):
    client.force_login(nurse)
    before = assessment_state(draft)
    response = _post_assessment(client, draft, **{field: value})
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert response.context["form"].errors
        assert assessment_state(draft) == before
    else:
        draft.refresh_from_db()
        assert _stored_text(draft, field) == value.strip()


@FUZZ
@given(field=st.sampled_from(CHOICE_TARGETS), value=ANY_SCALAR)
@example(field="weight_kg", value="2E+1")
@example(field="sbp", value="１２０")
@example(field="phq9_9", value="3")
@example(field="cssrs_q3", value="yes")
def test_any_value_in_a_number_or_radio_field_is_refused_or_plausible(
    client, nurse, draft, limits, field, value
):
    client.force_login(nurse)
    before = assessment_state(draft)
    response = _post_assessment(client, draft, **{field: value})
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        errors = response.context["form"].errors
        # A plausible systolic below the diastolic is reported on the diastolic.
        assert field in errors or (field == "sbp" and "dbp" in errors), errors.as_data()
        assert assessment_state(draft) == before
    draft.refresh_from_db()
    _assert_plausible(draft, limits)


@FUZZ
@given(values=st.dictionaries(st.sampled_from(CHOICE_TARGETS + TEXT_TARGETS), ANY_SCALAR))
def test_any_combination_of_values_never_breaks_the_assessment_form(
    client, nurse, draft, limits, values
):
    client.force_login(nurse)
    before = assessment_state(draft)
    response = _post_assessment(client, draft, **values)
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert response.context["form"].errors
        assert assessment_state(draft) == before
    draft.refresh_from_db()
    _assert_plausible(draft, limits)


def test_a_signed_assessment_refuses_edits_with_a_message(nurse_client, approved):
    before = assessment_state(approved)
    response = _post_assessment(nurse_client, approved, diagnosis="rewritten")
    assert response.status_code == 302
    assert response.url == reverse("protocols:assessment_detail", args=[approved.pk])
    page = nurse_client.get(response.url).content.decode()
    assert "This assessment is signed. Corrections are addenda." in page
    assert assessment_state(approved) == before


# --- the course form ----------------------------------------------------------------------------


def course_post_data(iv_protocol, psychiatrist, **overrides) -> dict[str, str]:
    data = {
        "protocol": str(iv_protocol.pk),
        "indication": TreatmentCourse.Indication.TRD,
        "indication_notes": "",
        "responsible_psychiatrist": str(psychiatrist.pk),
        "planned_sessions": "6",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def course_state(patient) -> tuple[int, int]:
    return TreatmentCourse.objects.filter(patient=patient).count(), TreatmentCourse.history.count()


def test_the_course_helper_posts_a_form_that_saves(
    nurse_client, patient, iv_protocol, psychiatrist
):
    url = reverse("protocols:course_new", args=[patient.pk])
    response = nurse_client.post(url, course_post_data(iv_protocol, psychiatrist))
    assert response.status_code == 302
    assert TreatmentCourse.objects.filter(patient=patient).count() == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("planned_sessions", "0"),
        ("planned_sessions", "101"),
        ("planned_sessions", "abc"),
        ("planned_sessions", "-1"),
        ("planned_sessions", "2.5"),
        ("planned_sessions", ""),
        ("planned_sessions", "99999999999999999999"),
        ("indication", "ketamine-for-fun"),
        ("indication", ""),
        ("protocol", "999999"),
        ("protocol", "abc"),
        ("protocol", ""),
        ("responsible_psychiatrist", "999999"),
        ("responsible_psychiatrist", "abc"),
        ("responsible_psychiatrist", ""),
        ("indication_notes", LONG),
        ("indication_notes", "bell \x07"),
    ],
)
def test_the_course_form_refuses_bad_values(
    nurse_client, patient, iv_protocol, psychiatrist, field, value
):
    before = course_state(patient)
    response = nurse_client.post(
        reverse("protocols:course_new", args=[patient.pk]),
        course_post_data(iv_protocol, psychiatrist, **{field: value}),
    )
    assert_field_error(response, field)
    assert course_state(patient) == before


@pytest.mark.parametrize("who", ["other_site", "inactive", "nurse", "gp"])
def test_the_course_form_refuses_anyone_but_an_active_psychiatrist_of_the_site(
    nurse_client, patient, iv_protocol, other_site, site, nurse, gp, who
):
    from clinic.models import Role

    chosen = {
        "other_site": lambda: UserFactory(roles=[Role.PSYCHIATRIST], sites=[other_site]),
        "inactive": lambda: UserFactory(roles=[Role.PSYCHIATRIST], sites=[site], is_active=False),
        "nurse": lambda: nurse,
        "gp": lambda: gp,
    }[who]()
    before = course_state(patient)
    response = nurse_client.post(
        reverse("protocols:course_new", args=[patient.pk]),
        course_post_data(iv_protocol, chosen),
    )
    assert_field_error(response, "responsible_psychiatrist")
    assert course_state(patient) == before
    assert f'<option value="{chosen.pk}"' not in response.content.decode()  # not even offered


@FUZZ
@given(
    field=st.sampled_from(["planned_sessions", "indication_notes", "indication", "protocol"]),
    value=ANY_SCALAR,
)
def test_any_value_in_the_course_form_never_breaks_it(
    client, nurse, patient, iv_protocol, psychiatrist, field, value
):
    client.force_login(nurse)
    before = course_state(patient)
    response = client.post(
        reverse("protocols:course_new", args=[patient.pk]),
        course_post_data(iv_protocol, psychiatrist, **{field: value}),
    )
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert field in response.context["form"].errors
        assert course_state(patient) == before
    else:
        course = TreatmentCourse.objects.filter(patient=patient).first()
        assert 1 <= course.planned_sessions <= 100


# --- the course status form ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"status": "bogus", "reason": "x"}, "status"),
        ({"status": "", "reason": "x"}, "status"),
        ({"status": "assessment-pending", "reason": "x"}, "status"),
        ({"status": "active", "reason": ""}, "status"),  # not before an approved assessment
        ({"status": "stopped", "reason": ""}, "reason"),
        ({"status": "stopped", "reason": "   "}, "reason"),
        ({"status": "stopped", "reason": "escape \x1b[0m"}, "reason"),
        ({"status": "stopped", "reason": LONG}, "reason"),
    ],
)
def test_the_course_status_form_refuses_bad_values(psychiatrist_client, course, data, field):
    before = (TreatmentCourse.objects.filter(pk=course.pk).values().get(), course.history.count())
    response = psychiatrist_client.post(reverse("followups:course_status", args=[course.pk]), data)
    assert_field_error(response, field)
    after = (TreatmentCourse.objects.filter(pk=course.pk).values().get(), course.history.count())
    assert after == before


# --- the sign form ------------------------------------------------------------------------------


def sign_state(assessment: Assessment) -> dict:
    return assessment_state(assessment) | {"failures": SignatureFailure.objects.count()}


def _sign(client, assessment: Assessment, **data):
    return client.post(reverse("protocols:assessment_sign", args=[assessment.pk]), data)


def test_signing_without_a_decision_is_refused(psychiatrist_client, submitted):
    before = sign_state(submitted)
    response = _sign(psychiatrist_client, submitted, password=TEST_PASSWORD)
    assert_field_error(response, "decision")
    assert sign_state(submitted) == before


@pytest.mark.parametrize("decision", ["maybe", "approved", ""])
def test_signing_with_an_unknown_decision_is_refused(psychiatrist_client, submitted, decision):
    before = sign_state(submitted)
    response = _sign(psychiatrist_client, submitted, decision=decision, password=TEST_PASSWORD)
    assert_field_error(response, "decision")
    assert sign_state(submitted) == before


def test_signing_with_an_empty_password_is_refused(psychiatrist_client, submitted):
    before = sign_state(submitted)
    response = _sign(psychiatrist_client, submitted, decision="approve", password="")
    assert_field_error(response, "password")
    assert sign_state(submitted) == before


@pytest.mark.parametrize(
    "password", ["hunter2-wrong", TEST_PASSWORD + " ", " " + TEST_PASSWORD, "x" * 5000]
)
def test_it_refuses_signing_with_a_wrong_password(
    psychiatrist_client, submitted, psychiatrist, password
):
    before = sign_state(submitted)
    response = _sign(psychiatrist_client, submitted, decision="approve", password=password)
    assert_field_error(response, "password", WRONG_PASSWORD)
    after = sign_state(submitted)
    assert after.pop("failures") == before.pop("failures") + 1  # the failed attempt is kept
    assert after == before
    failure = SignatureFailure.objects.latest("attempted_at")
    assert failure.user == psychiatrist
    assert failure.object_id == submitted.pk
    # The password is never echoed back into the page.
    assert password not in response.content.decode()


def test_approving_despite_an_absolute_contraindication_needs_a_reason(
    nurse, psychiatrist_client, complete_draft
):
    services.assessment_update(
        assessment=complete_draft,
        acting_user=nurse,
        **complete_fields(
            complete_draft.course,
            contraindications={
                **complete_fields(complete_draft.course)["contraindications"],
                "uncontrolled_hypertension": {"present": True, "note": ""},
            },
        ),
    )
    assessment = services.assessment_submit(assessment=complete_draft, acting_user=nurse)
    before = sign_state(assessment)
    for reason in ("", "   "):
        response = _sign(
            psychiatrist_client,
            assessment,
            decision="approve",
            password=TEST_PASSWORD,
            override_reason=reason,
        )
        assert_field_error(response, "override_reason", services.OVERRIDE_REASON_REQUIRED)
    assert sign_state(assessment) == before


def test_approving_a_high_risk_assessment_is_refused_with_a_clear_error(
    nurse, psychiatrist_client, complete_draft
):
    fields = complete_fields(
        complete_draft.course,
        cssrs_answers={
            "q1": True,
            "q2": True,
            "q3": True,
            "q4": True,
            "q5": False,
            "q6": False,
            "q6_recent": None,
        },
    )
    services.assessment_update(assessment=complete_draft, acting_user=nurse, **fields)
    assessment = services.assessment_submit(assessment=complete_draft, acting_user=nurse)
    before = sign_state(assessment)
    response = _sign(psychiatrist_client, assessment, decision="approve", password=TEST_PASSWORD)
    assert response.status_code == 200
    assert services.HIGH_RISK_BLOCKS_APPROVAL in response.context["form"].non_field_errors()
    assert services.HIGH_RISK_BLOCKS_APPROVAL in response.content.decode()
    assert sign_state(assessment) == before


@pytest.mark.parametrize("reason", [LONG, "bell \x07"])
def test_the_override_reason_refuses_bad_text(psychiatrist_client, submitted, reason):
    before = sign_state(submitted)
    response = _sign(
        psychiatrist_client,
        submitted,
        decision="approve",
        password=TEST_PASSWORD,
        override_reason=reason,
    )
    assert_field_error(response, "override_reason")
    assert sign_state(submitted) == before


@FUZZ
@given(
    decision=st.one_of(st.sampled_from(["approve", "decline"]), st.text(max_size=20)),
    password=st.text(max_size=100).filter(lambda p: p != TEST_PASSWORD),
    override_reason=st.text(max_size=100),
)
def test_no_wrong_password_or_decision_ever_signs(
    client, psychiatrist, submitted, decision, password, override_reason
):
    client.force_login(psychiatrist)
    before = sign_state(submitted)
    before.pop("failures")
    response = _sign(
        client, submitted, decision=decision, password=password, override_reason=override_reason
    )
    assert response.status_code == 200
    assert response.context["form"].errors
    after = sign_state(submitted)
    after.pop("failures")
    assert after == before


# --- the addendum form --------------------------------------------------------------------------


def addendum_state(assessment: Assessment) -> dict:
    return assessment_state(assessment) | {
        "addenda": Addendum.objects.count(),
        "addendum_history": Addendum.history.count(),
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"text": "", "reason": "typo", "password": TEST_PASSWORD}, "text"),
        ({"text": "   \n ", "reason": "typo", "password": TEST_PASSWORD}, "text"),
        ({"text": "Weight was 72 kg.", "reason": "", "password": TEST_PASSWORD}, "reason"),
        ({"text": "Weight was 72 kg.", "reason": "  ", "password": TEST_PASSWORD}, "reason"),
        ({"text": "Weight was 72 kg.", "reason": "typo", "password": ""}, "password"),
        ({"text": "Weight was 72 kg.", "reason": "typo", "password": "wrong"}, "password"),
        ({"text": LONG, "reason": "typo", "password": TEST_PASSWORD}, "text"),
        ({"text": "Weight was 72 kg.", "reason": LONG, "password": TEST_PASSWORD}, "reason"),
        ({"text": "bell \x07", "reason": "typo", "password": TEST_PASSWORD}, "text"),
        ({"text": "Weight was 72 kg.", "reason": "\x1b[2J", "password": TEST_PASSWORD}, "reason"),
    ],
)
def test_the_addendum_form_refuses_bad_values(nurse_client, approved, data, field):
    before = addendum_state(approved)
    response = nurse_client.post(reverse("protocols:addendum_new", args=[approved.pk]), data)
    assert_field_error(response, field)
    assert addendum_state(approved) == before
    assert Signature.objects.filter(meaning=Signature.Meaning.AUTHORED).count() == 0


def test_an_addendum_with_html_is_stored_as_typed_and_shown_escaped(nurse_client, approved, nurse):
    response = nurse_client.post(
        reverse("protocols:addendum_new", args=[approved.pk]),
        {"text": HOSTILE, "reason": HOSTILE, "password": TEST_PASSWORD},
    )
    assert response.status_code == 302
    addendum = Addendum.objects.get()
    assert addendum.text == HOSTILE
    page = nurse_client.get(response.url).content.decode()
    assert "<script>alert" not in page
    assert page.count(HOSTILE_ESCAPED) == 2


# --- the protocol version form ------------------------------------------------------------------


@pytest.fixture
def admin_client(client, administrator):
    client.force_login(administrator)
    return client


@pytest.fixture
def latest_rules(iv_protocol) -> dict:
    return copy.deepcopy(iv_protocol.versions.order_by("-version").first().rules)


def version_state() -> tuple[int, int]:
    return ProtocolVersion.objects.count(), ProtocolVersion.history.count()


def _post_version(client, protocol, rules_text: str, summary: str = "Clinic decision 2025-04"):
    return client.post(
        reverse("protocols:version_new", args=[protocol.pk]),
        {"change_summary": summary, "rules": rules_text},
    )


def test_the_version_helper_posts_a_form_that_saves(admin_client, iv_protocol, latest_rules):
    before = iv_protocol.versions.count()
    response = _post_version(admin_client, iv_protocol, json.dumps(latest_rules))
    assert response.status_code == 302
    assert iv_protocol.versions.count() == before + 1


@pytest.mark.parametrize(
    "text", ["", "{", "not json", "{'drug': 'ketamine'}", '{"a": 1,}', "[1, 2", "\ufeff{}", "}"]
)
def test_the_version_form_refuses_text_that_is_not_json(admin_client, iv_protocol, text):
    before = version_state()
    response = _post_version(admin_client, iv_protocol, text)
    assert_field_error(response, "rules")
    if text:
        message = response.context["form"].errors["rules"][0]
        assert message.startswith(RULES_NOT_JSON.split("{")[0]), message
    assert version_state() == before


def _mutate(rules: dict, path: tuple, value: Any) -> dict:
    rules = copy.deepcopy(rules)
    target = rules
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return rules


_DELETE = object()

SCHEMA_FAILURES = [
    pytest.param((), [], "The rules must be a JSON object.", id="a-list"),
    pytest.param(("drug",), _DELETE, "'drug' is missing", id="no-drug"),
    pytest.param(
        ("plausibility",), [], "'plausibility' has the wrong type", id="plausibility-list"
    ),
    pytest.param(("plausibility", "sbp"), [300, 50], "low is above high", id="limits-reversed"),
    pytest.param(("plausibility", "sbp"), [50], "give [low, high]", id="one-limit"),
    pytest.param(("plausibility", "xyz"), [1, 2], "unknown measurement", id="unknown-vital"),
    pytest.param(("required_instruments",), ["phq10"], "unknown instrument", id="bad-instrument"),
    pytest.param(("contraindications", 0, "severity"), "mild", "severity", id="bad-severity"),
    pytest.param(("contraindications", 0), "pregnancy", "expected an object", id="contra-string"),
    pytest.param(("alerts", 0, "op"), "=>", "unknown operator", id="bad-op"),
    pytest.param(("schedule", 0, "anchor"), "lunch", "unknown anchor", id="bad-anchor"),
    pytest.param(("followups", 0, "role"), "Janitor", "unknown role", id="bad-role"),
    pytest.param(("minimum_observation_minutes",), "60", "wrong type", id="minutes-string"),
    pytest.param(("assessment_validity_days",), True, "wrong type", id="days-bool"),
    pytest.param(("plausibility", "sbp"), ["a", "b"], "give numbers", id="limit-not-a-number"),
    pytest.param(("plausibility", "sbp"), [None, 300], "give numbers", id="limit-null"),
    pytest.param(("alerts", 0, "value"), "abc", "alerts[0]", id="alert-value-not-a-number"),
    pytest.param(("escalation",), [5], "escalation[0]", id="escalation-not-an-object"),
    pytest.param(("schedule", 0, "colour"), "red", "unknown keys", id="unknown-key"),
]


@pytest.mark.parametrize(("path", "value", "message"), SCHEMA_FAILURES)
def test_the_version_form_explains_rules_that_fail_the_schema(
    admin_client, iv_protocol, latest_rules, path, value, message
):
    rules = value if path == () else _mutate(latest_rules, path, value)
    before = version_state()
    response = _post_version(admin_client, iv_protocol, json.dumps(rules))
    assert_field_error(response, "rules")
    assert any(message in error for error in response.context["form"].errors["rules"])
    assert escape(message) in response.content.decode()
    assert version_state() == before


RULES_500 = "BUG: parse_rules lets a non-ValidationError escape; the version form answers 500"
CRASHING_RULES = [
    pytest.param(("alerts", 0), 5, id="alert-not-an-object"),
    pytest.param(("schedule", 0, "measures"), 5, id="measures-not-a-list"),
    pytest.param(("followups", 0, "instruments"), 5, id="followup-instruments-not-a-list"),
    pytest.param(("required_instruments",), [["phq9"]], id="instrument-not-a-string"),
]


@pytest.mark.parametrize(("path", "value"), CRASHING_RULES)
def test_the_version_form_refuses_rules_of_the_wrong_shape_with_a_field_error(
    admin_client, iv_protocol, latest_rules, path, value
):
    before = version_state()
    response = _post_version(
        admin_client, iv_protocol, json.dumps(_mutate(latest_rules, path, value))
    )
    assert_field_error(response, "rules")
    assert version_state() == before


def test_the_version_form_refuses_deeply_nested_json(admin_client, iv_protocol):
    before = version_state()
    response = _post_version(admin_client, iv_protocol, "[" * 100_000)
    assert_field_error(response, "rules")
    assert version_state() == before


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param(("drug",), "ketamine\x00", id="nul-in-a-string"),
        pytest.param(("dose", "nan"), float("nan"), id="nan"),
        pytest.param(("dose", "max_mg"), float("inf"), id="infinity"),
    ],
)
def test_the_version_form_refuses_json_the_database_cannot_store(
    admin_client, iv_protocol, latest_rules, path, value
):
    before = version_state()
    response = _post_version(
        admin_client, iv_protocol, json.dumps(_mutate(latest_rules, path, value))
    )
    assert_field_error(response, "rules")
    assert version_state() == before


@pytest.mark.parametrize(
    ("summary", "field"),
    [("", "change_summary"), (LONG, "change_summary"), ("bell \x07", "change_summary")],
)
def test_the_version_form_refuses_a_bad_change_summary(
    admin_client, iv_protocol, latest_rules, summary, field
):
    before = version_state()
    response = _post_version(admin_client, iv_protocol, json.dumps(latest_rules), summary)
    assert_field_error(response, field)
    assert version_state() == before


def test_the_version_edit_form_refuses_bad_rules_and_keeps_the_draft(
    admin_client, iv_protocol, latest_rules, administrator
):
    draft = services.protocol_version_create(
        protocol=iv_protocol, acting_user=administrator, rules=latest_rules, change_summary="d"
    )
    before = (ProtocolVersion.objects.filter(pk=draft.pk).values().get(), version_state())
    for text in ("{", json.dumps(_mutate(latest_rules, ("drug",), _DELETE))):
        response = admin_client.post(
            reverse("protocols:version_edit", args=[draft.pk]),
            {"change_summary": "changed", "rules": text},
        )
        assert_field_error(response, "rules")
    assert (ProtocolVersion.objects.filter(pk=draft.pk).values().get(), version_state()) == before


JSON_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=10)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    JSON_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(JSON_TEXT, children, max_size=3),
    ),
    max_leaves=6,
)
RULE_PATHS = [
    ("drug",),
    ("plausibility", "sbp"),
    ("plausibility", "weight_kg"),
    ("contraindications", 0),
    ("contraindications", 0, "code"),
    ("alerts", 0, "value"),
    ("alerts", 0, "field"),
    ("alerts", 0),
    ("schedule", 0, "measures"),
    ("followups", 0, "instruments"),
    ("schedule", 0),
    ("schedule", 0, "offset_minutes"),
    ("followups", 0, "offset_hours"),
    ("required_instruments",),
    ("minimum_observation_minutes",),
    ("fahrenheit_hint",),
]


@hypothesis_settings(FUZZ, report_multiple_bugs=False)
@given(path=st.sampled_from(RULE_PATHS), value=JSON_VALUES)
@example(path=("required_instruments",), value=[["phq9"]])
def test_any_change_to_the_rules_gets_a_field_error_or_a_draft(
    client, administrator, iv_protocol, latest_rules, path, value
):
    client.force_login(administrator)
    before = version_state()
    response = _post_version(client, iv_protocol, json.dumps(_mutate(latest_rules, path, value)))
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert "rules" in response.context["form"].errors
        assert version_state() == before


@pytest.mark.parametrize(
    "code",
    [["pregnancy"], {"a": 1}, 5, "", "duplicate"],
    ids=["list", "dict", "int", "empty", "duplicate"],
)
def test_the_version_form_refuses_a_contraindication_code_that_is_not_an_identifier(
    admin_client, iv_protocol, latest_rules, code
):
    if code == "duplicate":
        code = latest_rules["contraindications"][1]["code"]
    before = version_state()
    response = _post_version(
        admin_client,
        iv_protocol,
        json.dumps(_mutate(latest_rules, ("contraindications", 0, "code"), code)),
    )
    assert response.status_code == 200, "accepted as a draft"
    assert "rules" in response.context["form"].errors
    assert version_state() == before
