"""Step 1 workflow rules (SPEC §A2–A4, §G1–G2): contraindications and overrides, the C-SSRS block,
the suicide-risk flag and its notification, completeness on submit, and version pinning."""

from __future__ import annotations

import copy

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.urls import reverse

from clinic.models import Notification, RecordLocked, Role, Signature
from protocols import services
from protocols.models import Assessment, ProtocolVersion, TreatmentCourse
from protocols.selectors import signoff_queue_for_user
from tests.factories import PatientFactory, UserFactory
from tests.protocols.conftest import complete_fields

pytestmark = pytest.mark.django_db

# SPEC §A1: the fields every submittable assessment answers (beside contraindications and the
# protocol's required instruments). Text and choices, yes/no questions, baseline vitals.
REQUIRED_ANSWERS = (
    "diagnosis",
    "psychiatric_history",
    "medical_history",
    "current_medications",
    "allergies",
    "alcohol_use",
    "ketamine_pcp_use",
    "pregnancy",
)
REQUIRED_YES_NO = (
    "psychosis_personal",
    "mania_personal",
    "psychosis_mania_family",
    "benzodiazepines",
    "sedative_hypnotics",
    "psychostimulants",
    "maois",
    "opioids",
)
REQUIRED_BASELINE = ("sbp", "dbp", "hr", "rr", "spo2", "weight_kg")

HIGH_RISK_CSSRS = {
    "q1": True,
    "q2": True,
    "q3": True,
    "q4": True,
    "q5": False,
    "q6": False,
    "q6_recent": None,
}


def sign(assessment, signer, password, *, approve=True, override_reason=""):
    return services.assessment_sign(
        assessment=assessment,
        signer=signer,
        password=password,
        approve=approve,
        override_reason=override_reason,
    )


def submit_with(course, nurse, **overrides) -> Assessment:
    """A draft filled with complete_fields(**overrides) and submitted."""
    draft = services.assessment_create(course=course, acting_user=nurse)
    services.assessment_update(
        assessment=draft, acting_user=nurse, **complete_fields(course, **overrides)
    )
    return services.assessment_submit(assessment=draft, acting_user=nurse)


def contraindications_with(course, code: str, *, note: str = "") -> dict:
    answers = complete_fields(course)["contraindications"]
    answers[code] = {"present": True, "note": note}
    return answers


def first(course, *, absolute: bool):
    rules = course.protocol_version.parsed
    return next(c for c in rules.contraindications if c.is_absolute == absolute)


def publish_version(protocol, administrator, rules) -> ProtocolVersion:
    version = services.protocol_version_create(
        protocol=protocol, acting_user=administrator, rules=rules, change_summary="Next version"
    )
    return services.protocol_version_publish(version=version, acting_user=administrator)


def suicide_notifications(recipient=None):
    notifications = Notification.objects.filter(kind=Notification.Kind.SUICIDE_RISK)
    return notifications.filter(recipient=recipient) if recipient else notifications


# --- Absolute contraindications (§A2) ------------------------------------------------------------


@pytest.fixture
def with_absolute(course, nurse) -> Assessment:
    code = first(course, absolute=True).code
    return submit_with(course, nurse, contraindications=contraindications_with(course, code))


@pytest.mark.parametrize("reason", ["", "   "], ids=["empty", "blank"])
def test_approving_over_an_absolute_contraindication_needs_an_override_reason(
    with_absolute, psychiatrist, password, reason
):
    with pytest.raises(ValidationError) as caught:
        sign(with_absolute, psychiatrist, password, override_reason=reason)

    assert caught.value.message_dict == {"override_reason": [services.OVERRIDE_REASON_REQUIRED]}
    assessment = Assessment.objects.get(pk=with_absolute.pk)
    assert assessment.status == Assessment.Status.SUBMITTED
    assert not Signature.objects.exists()


def test_the_sign_view_puts_the_missing_override_reason_on_its_field(
    client, with_absolute, psychiatrist, password
):
    client.force_login(psychiatrist)

    response = client.post(
        reverse("protocols:assessment_sign", args=[with_absolute.pk]),
        {"decision": "approve", "override_reason": "", "password": password},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["override_reason"] == [services.OVERRIDE_REASON_REQUIRED]
    assert Assessment.objects.get(pk=with_absolute.pk).status == Assessment.Status.SUBMITTED


def test_approving_over_an_absolute_contraindication_with_a_reason_stores_it(
    with_absolute, psychiatrist, password
):
    reason = "Aneurysm repaired 2019; cleared by vascular surgery."

    sign(with_absolute, psychiatrist, password, override_reason=f"  {reason}  ")

    assessment = Assessment.objects.get(pk=with_absolute.pk)
    assert assessment.status == Assessment.Status.APPROVED
    assert assessment.override_reason == reason
    assert assessment.signed_content()["override_reason"] == reason  # part of what was signed


def test_declining_over_an_absolute_contraindication_needs_no_reason(
    with_absolute, psychiatrist, password
):
    sign(with_absolute, psychiatrist, password, approve=False)

    assessment = Assessment.objects.get(pk=with_absolute.pk)
    assert assessment.status == Assessment.Status.NOT_APPROVED
    assert assessment.is_locked
    assert Signature.objects.get().meaning == Signature.Meaning.DECLINED
    assert assessment.course.status == TreatmentCourse.Status.ASSESSMENT_PENDING


# --- Relative contraindications (§A2) ------------------------------------------------------------


@pytest.mark.parametrize("note", ["", "  "], ids=["empty", "blank"])
def test_a_relative_contraindication_without_a_note_is_missing_and_blocks_submit(
    course, draft, nurse, note
):
    item = first(course, absolute=False)
    services.assessment_update(
        assessment=draft,
        acting_user=nurse,
        **complete_fields(
            course, contraindications=contraindications_with(course, item.code, note=note)
        ),
    )
    expected = f"Contraindication: {item.label}: a note acknowledging it"

    assert services.assessment_missing_items(Assessment.objects.get(pk=draft.pk)) == [expected]
    with pytest.raises(ValidationError) as caught:
        services.assessment_submit(assessment=draft, acting_user=nurse)
    assert caught.value.messages == [expected]
    assert Assessment.objects.get(pk=draft.pk).status == Assessment.Status.DRAFT


def test_a_relative_contraindication_with_a_note_can_be_submitted(course, nurse):
    item = first(course, absolute=False)
    answers = contraindications_with(course, item.code, note="In remission for 6 years.")

    assessment = submit_with(course, nurse, contraindications=answers)

    assert assessment.status == Assessment.Status.SUBMITTED


# --- C-SSRS high risk (§A4) ----------------------------------------------------------------------


@pytest.fixture
def high_risk(course, nurse) -> Assessment:
    assessment = submit_with(course, nurse, cssrs_answers=HIGH_RISK_CSSRS)
    assert assessment.cssrs_risk == "high"
    return assessment


@pytest.mark.parametrize("override_reason", ["", "Psychiatrist judges risk acceptable."])
def test_high_cssrs_risk_makes_approval_impossible(
    high_risk, psychiatrist, password, override_reason
):
    with pytest.raises(ValidationError) as caught:
        sign(high_risk, psychiatrist, password, override_reason=override_reason)

    assert caught.value.messages == [services.HIGH_RISK_BLOCKS_APPROVAL]
    assert Assessment.objects.get(pk=high_risk.pk).status == Assessment.Status.SUBMITTED
    assert not Signature.objects.exists()


def test_high_cssrs_risk_can_be_declined(high_risk, psychiatrist, password):
    sign(high_risk, psychiatrist, password, approve=False)

    assert Assessment.objects.get(pk=high_risk.pk).status == Assessment.Status.NOT_APPROVED


# --- PHQ-9 item 9 (§A4) --------------------------------------------------------------------------


@pytest.fixture
def course_without_cssrs(iv_protocol, administrator, patient, nurse, psychiatrist):
    """A course on a published version that does not list the C-SSRS among its instruments."""
    rules = copy.deepcopy(iv_protocol.versions.published().latest("version").rules)
    rules["required_instruments"] = ["phq9", "gad7"]
    publish_version(iv_protocol, administrator, rules)
    return services.course_start(
        patient=patient,
        protocol=iv_protocol,
        acting_user=nurse,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=psychiatrist,
        planned_sessions=6,
    )


ITEM9_POSITIVE = [1, 1, 1, 1, 1, 1, 1, 1, 1]


def test_phq9_item_9_sets_the_flag_requires_the_cssrs_and_notifies_once(
    course_without_cssrs, nurse, psychiatrist, site
):
    course = course_without_cssrs
    colleague = UserFactory(username="other-psychiatrist", roles=[Role.PSYCHIATRIST], sites=[site])
    draft = services.assessment_create(course=course, acting_user=nurse)
    no_cssrs = complete_fields(course, cssrs_answers=None)
    services.assessment_update(assessment=draft, acting_user=nurse, **no_cssrs)
    assert services.assessment_missing_items(Assessment.objects.get(pk=draft.pk)) == []

    services.assessment_update(
        assessment=draft, acting_user=nurse, **(no_cssrs | {"phq9_items": ITEM9_POSITIVE})
    )

    assessment = Assessment.objects.get(pk=draft.pk)
    assert assessment.suicide_risk_flag is True
    assert services.assessment_missing_items(assessment) == [
        "C-SSRS screener (required: PHQ-9 item 9 is above 0)"
    ]
    with pytest.raises(ValidationError):
        services.assessment_submit(assessment=assessment, acting_user=nurse)
    (notification,) = suicide_notifications()
    assert notification.recipient == course.responsible_psychiatrist == psychiatrist
    assert notification.url == reverse("protocols:assessment_detail", args=[draft.pk])
    assert not suicide_notifications(colleague).exists()

    services.assessment_update(
        assessment=draft,
        acting_user=nurse,
        **(no_cssrs | {"phq9_items": ITEM9_POSITIVE, "diagnosis": "Edited again"}),
    )

    assert suicide_notifications().count() == 1


def test_the_flag_on_the_shipped_protocol_notifies_the_psychiatrist(complete_draft, nurse):
    services.assessment_update(
        assessment=complete_draft, acting_user=nurse, phq9_items=[0] * 8 + [2]
    )

    assert Assessment.objects.get(pk=complete_draft.pk).suicide_risk_flag is True
    assert suicide_notifications(complete_draft.course.responsible_psychiatrist).count() == 1


def test_phq9_item_9_at_0_neither_flags_nor_notifies(complete_draft, nurse):
    services.assessment_update(
        assessment=complete_draft, acting_user=nurse, phq9_items=[3] * 8 + [0]
    )

    assert Assessment.objects.get(pk=complete_draft.pk).suicide_risk_flag is False
    assert not suicide_notifications().exists()


def test_the_flagged_assessment_can_be_submitted_once_the_cssrs_is_done(
    course_without_cssrs, nurse
):
    assessment = submit_with(course_without_cssrs, nurse, phq9_items=ITEM9_POSITIVE)

    assert assessment.suicide_risk_flag is True
    assert assessment.status == Assessment.Status.SUBMITTED


# --- Completeness on submit (§A3) ----------------------------------------------------------------


@pytest.fixture
def empty_draft(site, nurse, psychiatrist, iv_protocol) -> Assessment:
    patient = PatientFactory(
        home_site=site, created_by=nurse, weight_kg=None, weight_measured_on=None
    )
    course = services.course_start(
        patient=patient,
        protocol=iv_protocol,
        acting_user=nurse,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=psychiatrist,
        planned_sessions=6,
    )
    return services.assessment_create(course=course, acting_user=nurse)


def test_submitting_an_empty_draft_lists_every_missing_item(empty_draft, nurse):
    rules = empty_draft.course.protocol_version.parsed
    expected_count = (
        len(REQUIRED_ANSWERS)
        + len(REQUIRED_YES_NO)
        + len(REQUIRED_BASELINE)
        + len(rules.contraindications)
        + len(rules.required_instruments)
    )

    with pytest.raises(ValidationError) as caught:
        services.assessment_submit(assessment=empty_draft, acting_user=nurse)

    missing = caught.value.messages
    assert len(missing) == expected_count
    assert len(set(missing)) == len(missing)
    assert missing == services.assessment_missing_items(empty_draft)
    for name in REQUIRED_ANSWERS + REQUIRED_YES_NO + REQUIRED_BASELINE:
        label = str(Assessment._meta.get_field(name).verbose_name)
        assert any(label.lower() in item.lower() for item in missing), name
    for item in rules.contraindications:
        assert f"Contraindication: {item.label}: yes or no" in missing
    assert {"PHQ-9: every item", "GAD-7: every item", "C-SSRS screener"} <= set(missing)
    assert Assessment.objects.get(pk=empty_draft.pk).status == Assessment.Status.DRAFT
    assert not Notification.objects.exists()


def test_the_edit_page_lists_the_missing_items_after_a_refused_submit(client, empty_draft, nurse):
    client.force_login(nurse)

    response = client.post(
        reverse("protocols:assessment_submit", args=[empty_draft.pk]), follow=True
    )

    assert response.redirect_chain[-1][0] == reverse(
        "protocols:assessment_edit", args=[empty_draft.pk]
    )
    assert response.context["missing"] == services.assessment_missing_items(empty_draft)
    assert Assessment.objects.get(pk=empty_draft.pk).status == Assessment.Status.DRAFT


def test_a_complete_draft_is_submitted_and_the_psychiatrist_notified(
    complete_draft, nurse, psychiatrist
):
    services.assessment_submit(assessment=complete_draft, acting_user=nurse)

    assessment = Assessment.objects.get(pk=complete_draft.pk)
    assert assessment.status == Assessment.Status.SUBMITTED
    assert assessment.submitted_by == nurse
    assert assessment.submitted_at is not None
    (notification,) = Notification.objects.all()
    assert notification.recipient == psychiatrist
    assert notification.kind == Notification.Kind.ASSESSMENT_SUBMITTED
    assert notification.url == reverse("protocols:assessment_detail", args=[assessment.pk])


def test_a_submitted_assessment_cannot_be_submitted_again(submitted, nurse):
    with pytest.raises(ValidationError):
        services.assessment_submit(assessment=submitted, acting_user=nurse)

    assert Notification.objects.filter(kind=Notification.Kind.ASSESSMENT_SUBMITTED).count() == 1


# --- Editing after submission ------------------------------------------------------------------


def test_editing_a_submitted_assessment_returns_it_to_draft(submitted, nurse, psychiatrist):
    services.assessment_update(assessment=submitted, acting_user=nurse, allergies="Penicillin")

    assessment = Assessment.objects.get(pk=submitted.pk)
    assert assessment.status == Assessment.Status.DRAFT
    assert (assessment.submitted_at, assessment.submitted_by) == (None, None)
    assert assessment.allergies == "Penicillin"
    assert signoff_queue_for_user(user=psychiatrist) == []


def test_saving_a_submitted_assessment_unchanged_keeps_it_submitted(submitted, nurse, course):
    services.assessment_update(assessment=submitted, acting_user=nurse, **complete_fields(course))

    assert Assessment.objects.get(pk=submitted.pk).status == Assessment.Status.SUBMITTED


def test_a_reopened_assessment_cannot_be_signed_until_resubmitted(
    submitted, nurse, psychiatrist, password
):
    services.assessment_update(assessment=submitted, acting_user=nurse, allergies="Penicillin")

    with pytest.raises(ValidationError):
        sign(submitted, psychiatrist, password)

    services.assessment_submit(assessment=submitted, acting_user=nurse)
    sign(submitted, psychiatrist, password)
    assert Assessment.objects.get(pk=submitted.pk).status == Assessment.Status.APPROVED


# --- Course status (§G2) -------------------------------------------------------------------------


def test_approving_makes_an_assessment_pending_course_active(submitted, psychiatrist, password):
    assert submitted.course.status == TreatmentCourse.Status.ASSESSMENT_PENDING

    sign(submitted, psychiatrist, password)

    assert TreatmentCourse.objects.get(pk=submitted.course_id).status == "active"


def test_declining_leaves_the_course_assessment_pending(submitted, psychiatrist, password):
    sign(submitted, psychiatrist, password, approve=False)

    course = TreatmentCourse.objects.get(pk=submitted.course_id)
    assert course.status == TreatmentCourse.Status.ASSESSMENT_PENDING


# --- Version pinning (§G1) ---------------------------------------------------------------------


def test_a_course_pins_the_current_published_version_and_keeps_it(
    course, iv_protocol, administrator, patient, nurse, psychiatrist
):
    # The shipped current version (2 since migration 0006), then one more published, one draft.
    current = iv_protocol.versions.published().latest("version")
    assert course.protocol_version == current
    v1 = current

    v2 = publish_version(iv_protocol, administrator, v1.rules)
    draft_v3 = services.protocol_version_create(
        protocol=iv_protocol, acting_user=administrator, rules=v1.rules, change_summary="Draft"
    )

    assert TreatmentCourse.objects.get(pk=course.pk).protocol_version == v1
    later = services.course_start(
        patient=patient,
        protocol=iv_protocol,
        acting_user=nurse,
        indication=TreatmentCourse.Indication.GAD,
        responsible_psychiatrist=psychiatrist,
        planned_sessions=4,
    )
    assert later.protocol_version == v2
    assert (v2.version, draft_v3.version, draft_v3.is_published) == (
        current.version + 1,
        current.version + 2,
        False,
    )


def test_a_published_version_refuses_updates(iv_protocol, administrator):
    v1 = iv_protocol.versions.published().latest("version")
    rules = copy.deepcopy(v1.rules)
    rules["minimum_observation_minutes"] = 5

    with pytest.raises(ValidationError) as caught:
        services.protocol_version_update(
            version=v1, acting_user=administrator, rules=rules, change_summary="Shorter"
        )

    assert caught.value.messages == [services.VERSION_PUBLISHED]
    v1.refresh_from_db()
    assert v1.rules["minimum_observation_minutes"] == 60


def test_a_published_version_cannot_be_published_again(iv_protocol, administrator):
    v1 = iv_protocol.versions.published().latest("version")
    published_at = v1.published_at

    with pytest.raises(ValidationError):
        services.protocol_version_publish(version=v1, acting_user=administrator)

    v1.refresh_from_db()
    assert v1.published_at == published_at


def test_a_draft_version_can_be_updated_until_published(iv_protocol, administrator):
    v1 = iv_protocol.versions.published().latest("version")
    draft = services.protocol_version_create(
        protocol=iv_protocol, acting_user=administrator, rules=v1.rules, change_summary="Draft"
    )
    rules = copy.deepcopy(v1.rules)
    rules["minimum_observation_minutes"] = 90

    services.protocol_version_update(
        version=draft, acting_user=administrator, rules=rules, change_summary="Longer"
    )
    services.protocol_version_publish(version=draft, acting_user=administrator)

    with pytest.raises(ValidationError):
        services.protocol_version_update(
            version=draft, acting_user=administrator, rules=v1.rules, change_summary="Back"
        )
    assert ProtocolVersion.objects.get(pk=draft.pk).parsed.minimum_observation_minutes == 90


def test_a_published_version_cannot_be_rewritten_through_the_orm(iv_protocol):
    v1 = iv_protocol.versions.published().latest("version")
    v1.rules = {**v1.rules, "minimum_observation_minutes": 5}

    with pytest.raises((RecordLocked, ValidationError, DatabaseError)), transaction.atomic():
        v1.save()

    assert ProtocolVersion.objects.get(pk=v1.pk).rules["minimum_observation_minutes"] == 60
