"""The mutating Step 1 views (SPEC §A, §S, §U): happy path, GET refused where POST-only,
anonymous redirected to log in, wrong role 403, other site 404."""

from __future__ import annotations

import json

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.urls import reverse

from clinic.models import Addendum, Notification, Role, Signature, SignatureFailure
from protocols import services
from protocols.models import Assessment, ProtocolVersion, TreatmentCourse
from tests.factories import TEST_PASSWORD, UserFactory
from tests.protocols.conftest import complete_fields
from tests.protocols.test_step1_bad_input import assessment_post_data, assessment_state

pytestmark = pytest.mark.django_db


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def approved(submitted, psychiatrist) -> Assessment:
    return services.assessment_sign(
        assessment=submitted, signer=psychiatrist, password=TEST_PASSWORD, approve=True
    )


@pytest.fixture
def draft_version(iv_protocol, administrator) -> ProtocolVersion:
    latest = iv_protocol.versions.order_by("-version").first()
    return services.protocol_version_create(
        protocol=iv_protocol,
        acting_user=administrator,
        rules=latest.rules,
        change_summary="Lower the SBP warning threshold",
    )


@pytest.fixture
def outsider_psychiatrist(other_site):
    """A psychiatrist of another site: may sign, but not this site's assessments."""
    return UserFactory(username="outsider.psy", roles=[Role.PSYCHIATRIST], sites=[other_site])


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# Each mutating view, with the fixture its URL is built from.
TARGETS = {
    "version_new": ("iv_protocol", "protocol_id"),
    "version_edit": ("draft_version", "version_id"),
    "version_publish": ("draft_version", "version_id"),
    "course_new": ("patient", "patient_id"),
    "course_status": ("course", "course_id"),
    "assessment_new": ("course", "course_id"),
    "assessment_edit": ("draft", "assessment_id"),
    "assessment_submit": ("complete_draft", "assessment_id"),
    "assessment_sign": ("submitted", "assessment_id"),
    "addendum_new": ("approved", "assessment_id"),
}
POST_ONLY = ("assessment_new", "assessment_submit", "version_publish")


def _url(request, name: str) -> str:
    fixture, kwarg = TARGETS[name]
    obj = request.getfixturevalue(fixture)
    # The course status page lives with Step 3: completing a course plans its follow-ups.
    namespace = "followups" if name == "course_status" else "protocols"
    return reverse(f"{namespace}:{name}", kwargs={kwarg: obj.pk})


def _world() -> dict:
    """Counts of everything the Step 1 views can write."""
    return {
        "versions": ProtocolVersion.objects.count(),
        "version_history": ProtocolVersion.history.count(),
        "published": ProtocolVersion.objects.filter(published_at__isnull=False).count(),
        "courses": TreatmentCourse.objects.count(),
        "course_history": TreatmentCourse.history.count(),
        "assessments": Assessment.objects.count(),
        "assessment_history": Assessment.history.count(),
        "signatures": Signature.objects.count(),
        "failures": SignatureFailure.objects.count(),
        "addenda": Addendum.objects.count(),
        "notifications": Notification.objects.count(),
    }


def _plausible_post(name: str, request) -> dict:
    """A body the view would accept from an authorized user, so refusals are about access."""
    if name in {"version_new", "version_edit"}:
        rules = request.getfixturevalue("iv_protocol").versions.order_by("version").first().rules
        return {"change_summary": "x", "rules": json.dumps(rules)}
    if name == "course_new":
        return {
            "protocol": request.getfixturevalue("iv_protocol").pk,
            "indication": "trd",
            "responsible_psychiatrist": request.getfixturevalue("psychiatrist").pk,
            "planned_sessions": 6,
        }
    if name == "course_status":
        return {"status": "stopped", "reason": "Patient moved away"}
    if name == "assessment_edit":
        return assessment_post_data(request.getfixturevalue("course"), save="")
    if name == "assessment_sign":
        return {"decision": "approve", "password": TEST_PASSWORD}
    if name == "addendum_new":
        return {"text": "Weight 72 kg", "reason": "typo", "password": TEST_PASSWORD}
    return {}


def _call(client, method: str, url: str, name: str, request):
    return getattr(client, method)(url, _plausible_post(name, request) if method == "post" else {})


def _methods(names) -> list[tuple[str, str]]:
    """(view, method) pairs; GET on a POST-only view is answered 405 before anything else."""
    return [(n, m) for n in names for m in ("get", "post") if not (m == "get" and n in POST_ONLY)]


# --- access: anonymous, method, role, site -------------------------------------------------------


@pytest.mark.parametrize("name", TARGETS)
@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_users_are_sent_to_log_in(client, request, name, method):
    url = _url(request, name)
    before = _world()
    response = getattr(client, method)(
        url, _plausible_post(name, request) if method == "post" else {}
    )
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={url}"
    assert _world() == before


@pytest.mark.parametrize(
    ("name", "user"),
    [
        ("assessment_new", "nurse"),
        ("assessment_submit", "nurse"),
        ("version_publish", "administrator"),
    ],
)
def test_post_only_views_refuse_get(client, request, name, user):
    client.force_login(request.getfixturevalue(user))
    url = _url(request, name)
    before = _world()
    assert client.get(url).status_code == 405
    assert client.head(url).status_code == 405
    assert _world() == before


WRONG_ROLES = [
    ("version_new", "nurse"),
    ("version_new", "psychiatrist"),
    ("version_new", "gp"),
    ("version_edit", "nurse"),
    ("version_edit", "psychiatrist"),
    ("version_publish", "nurse"),
    ("version_publish", "psychiatrist"),
    ("version_publish", "anesthesiologist"),
    ("course_new", "gp"),
    ("course_new", "anesthesiologist"),
    ("course_new", "administrator"),
    ("course_status", "nurse"),
    ("course_status", "gp"),
    ("course_status", "administrator"),
    ("assessment_new", "gp"),
    ("assessment_new", "anesthesiologist"),
    ("assessment_new", "administrator"),
    ("assessment_edit", "gp"),
    ("assessment_edit", "anesthesiologist"),
    ("assessment_edit", "administrator"),
    ("assessment_submit", "gp"),
    ("assessment_submit", "administrator"),
    ("assessment_sign", "nurse"),
    ("assessment_sign", "anesthesiologist"),
    ("assessment_sign", "gp"),
    ("assessment_sign", "administrator"),
    ("addendum_new", "gp"),
    ("addendum_new", "administrator"),
]


@pytest.mark.parametrize(
    ("name", "role", "method"),
    [(n, r, m) for n, r in WRONG_ROLES for _, m in _methods([n])],
)
def test_the_wrong_role_is_refused_with_403(client, request, name, role, method):
    url = _url(request, name)
    client.force_login(request.getfixturevalue(role))
    before = _world()
    response = getattr(client, method)(
        url, _plausible_post(name, request) if method == "post" else {}
    )
    assert response.status_code == 403
    assert _world() == before


SITE_SCOPED = [n for n in TARGETS if not n.startswith("version_")]


@pytest.mark.parametrize(("name", "method"), _methods(SITE_SCOPED))
@pytest.mark.parametrize("who", ["outsider", "outsider_psychiatrist"])
def test_a_user_of_another_site_gets_404(client, request, name, method, who):
    url = _url(request, name)
    client.force_login(request.getfixturevalue(who))
    before = _world()
    response = getattr(client, method)(
        url, _plausible_post(name, request) if method == "post" else {}
    )
    assert response.status_code == 404
    assert _world() == before


def test_a_psychiatrist_of_another_site_neither_sees_nor_counts_the_assessment(
    client, submitted, outsider_psychiatrist
):
    client.force_login(outsider_psychiatrist)
    response = client.get(reverse("protocols:signoff_queue"))
    assert response.status_code == 200
    assert response.context["rows"] == []
    assert submitted.patient.family_name not in response.content.decode()
    assert 'data-testid="nav-count-sign-off"' not in response.content.decode()
    detail = reverse("protocols:assessment_detail", args=[submitted.pk])
    assert client.get(detail).status_code == 404


def test_a_voided_patient_takes_no_new_course(client, nurse, patient, iv_protocol, psychiatrist):
    from patients import services as patient_services

    patient_services.patient_void(patient=patient, acting_user=nurse, reason="Duplicate")
    client.force_login(nurse)
    before = _world()
    url = reverse("protocols:course_new", args=[patient.pk])
    response = client.post(
        url,
        {
            "protocol": iv_protocol.pk,
            "indication": "trd",
            "responsible_psychiatrist": psychiatrist.pk,
            "planned_sessions": 6,
        },
    )
    assert response.status_code == 404
    assert _world() == before


# --- protocol versions --------------------------------------------------------------------------


def test_an_administrator_creates_a_draft_version_from_the_current_rules(
    client, administrator, iv_protocol
):
    client.force_login(administrator)
    url = reverse("protocols:version_new", args=[iv_protocol.pk])
    page = client.get(url)
    assert page.status_code == 200
    current = iv_protocol.versions.order_by("-version").first()
    assert json.loads(page.context["form"].initial["rules"]) == current.rules

    rules = json.loads(page.context["form"].initial["rules"])
    rules["plausibility"]["sbp"] = [60, 280]
    response = client.post(
        url, {"change_summary": "Narrower SBP limits", "rules": json.dumps(rules)}
    )

    version = iv_protocol.versions.order_by("-version").first()
    assert response.status_code == 302
    assert response.url == reverse("protocols:version_detail", args=[version.pk])
    assert version.version == current.version + 1
    assert version.rules["plausibility"]["sbp"] == [60, 280]
    assert version.created_by == administrator
    assert not version.is_published
    assert version.history.latest().history_user == administrator
    current.refresh_from_db()
    assert current.rules["plausibility"]["sbp"] != [60, 280]  # the published one never changes


def test_an_administrator_edits_a_draft_version(client, administrator, draft_version):
    client.force_login(administrator)
    rules = dict(draft_version.rules, minimum_observation_minutes=90)
    response = client.post(
        reverse("protocols:version_edit", args=[draft_version.pk]),
        {"change_summary": "Longer observation", "rules": json.dumps(rules)},
    )
    assert response.status_code == 302
    draft_version.refresh_from_db()
    assert draft_version.rules["minimum_observation_minutes"] == 90
    assert draft_version.change_summary == "Longer observation"


def test_a_published_version_cannot_be_edited(client, administrator, iv_protocol):
    published = iv_protocol.versions.published().latest("version")
    client.force_login(administrator)
    url = reverse("protocols:version_edit", args=[published.pk])
    before = (_world(), published.rules)
    response = client.post(url, {"change_summary": "x", "rules": json.dumps(published.rules)})
    assert response.status_code == 302
    assert response.url == reverse("protocols:version_detail", args=[published.pk])
    assert services.VERSION_PUBLISHED in _messages(response)
    published.refresh_from_db()
    assert (_world(), published.rules) == before


def test_an_administrator_publishes_a_draft_and_new_courses_use_it(
    client, administrator, draft_version, patient, nurse, psychiatrist, iv_protocol
):
    client.force_login(administrator)
    response = client.post(reverse("protocols:version_publish", args=[draft_version.pk]))
    assert response.status_code == 302
    assert response.url == reverse("protocols:version_detail", args=[draft_version.pk])
    draft_version.refresh_from_db()
    assert draft_version.is_published
    assert draft_version.published_by == administrator

    course = services.course_start(
        patient=patient,
        protocol=iv_protocol,
        acting_user=nurse,
        indication="trd",
        responsible_psychiatrist=psychiatrist,
        planned_sessions=4,
    )
    assert course.protocol_version == draft_version

    # Publishing twice changes nothing and says why.
    published_at = draft_version.published_at
    again = client.post(reverse("protocols:version_publish", args=[draft_version.pk]))
    assert again.status_code == 302
    assert services.VERSION_PUBLISHED in _messages(again)
    draft_version.refresh_from_db()
    assert draft_version.published_at == published_at


# --- courses ------------------------------------------------------------------------------------


def test_a_nurse_opens_a_course_pinned_to_the_current_version(
    client, nurse, patient, iv_protocol, psychiatrist
):
    client.force_login(nurse)
    url = reverse("protocols:course_new", args=[patient.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert list(page.context["form"].fields["responsible_psychiatrist"].queryset) == [psychiatrist]

    response = client.post(
        url,
        {
            "protocol": iv_protocol.pk,
            "indication": TreatmentCourse.Indication.GAD,
            "indication_notes": "Severe, 10 years",
            "responsible_psychiatrist": psychiatrist.pk,
            "planned_sessions": 6,
        },
    )
    assert response.status_code == 302
    assert response.url == reverse("patients:chart", args=[patient.pk])
    course = TreatmentCourse.objects.get(patient=patient)
    assert course.protocol_version == iv_protocol.versions.published().latest("version")
    assert course.status == TreatmentCourse.Status.ASSESSMENT_PENDING
    assert course.responsible_psychiatrist == psychiatrist
    assert course.created_by == nurse
    assert course.history.latest().history_user == nurse


def test_a_psychiatrist_stops_a_course_with_a_reason(client, psychiatrist, course):
    client.force_login(psychiatrist)
    url = reverse("followups:course_status", args=[course.pk])
    assert client.get(url).status_code == 200
    response = client.post(url, {"status": "stopped", "reason": "Patient declined treatment"})
    assert response.status_code == 302
    course.refresh_from_db()
    assert course.status == TreatmentCourse.Status.STOPPED
    assert course.status_reason == "Patient declined treatment"
    assert course.history.latest().history_user == psychiatrist


# --- assessments --------------------------------------------------------------------------------


def test_a_nurse_starts_an_assessment_with_the_patients_weight(client, nurse, course):
    client.force_login(nurse)
    response = client.post(reverse("protocols:assessment_new", args=[course.pk]))
    assessment = Assessment.objects.get(course=course)
    assert response.status_code == 302
    assert response.url == reverse("protocols:assessment_edit", args=[assessment.pk])
    assert assessment.status == Assessment.Status.DRAFT
    assert assessment.created_by == nurse
    assert assessment.weight_kg == course.patient.weight_kg


def test_no_assessment_starts_on_a_closed_course(client, nurse, psychiatrist, course):
    services.course_set_status(
        course=course, acting_user=psychiatrist, status="stopped", reason="Moved away"
    )
    client.force_login(nurse)
    before = _world()
    response = client.post(reverse("protocols:assessment_new", args=[course.pk]))
    assert response.status_code == 302
    assert response.url == reverse("patients:chart", args=[course.patient_id])
    assert any("closed" in m for m in _messages(response))
    assert _world() == before


def test_a_nurse_saves_a_draft(client, nurse, draft, course):
    client.force_login(nurse)
    url = reverse("protocols:assessment_edit", args=[draft.pk])
    assert client.get(url).status_code == 200
    response = client.post(url, assessment_post_data(course, save=""))
    assert response.status_code == 302
    assert response.url == url
    assert "Draft saved." in _messages(response)
    draft.refresh_from_db()
    assert draft.status == Assessment.Status.DRAFT
    assert draft.phq9_items == complete_fields(course)["phq9_items"]
    assert draft.phq9_total == sum(draft.phq9_items)
    assert draft.history.latest().history_user == nurse


def test_submitting_an_incomplete_draft_lists_what_is_missing(client, nurse, draft):
    client.force_login(nurse)
    before = _world()
    response = client.post(reverse("protocols:assessment_submit", args=[draft.pk]), follow=True)
    assert response.redirect_chain == [(reverse("protocols:assessment_edit", args=[draft.pk]), 302)]
    page = response.content.decode()
    assert "Not submitted" in page
    missing = services.assessment_missing_items(draft)
    assert missing and response.context["missing"] == missing
    assert 'data-testid="missing-items"' in page
    for item in missing[:5] + missing[-3:]:
        assert item in page
    draft.refresh_from_db()
    assert draft.status == Assessment.Status.DRAFT
    assert _world() == before


def test_save_and_submit_with_a_missing_item_saves_the_draft_and_names_the_item(
    client, nurse, draft, course
):
    client.force_login(nurse)
    data = assessment_post_data(course, submit="", allergies="", phq9_4=None)
    response = client.post(reverse("protocols:assessment_edit", args=[draft.pk]), data, follow=True)
    page = response.content.decode()
    draft.refresh_from_db()
    assert draft.status == Assessment.Status.DRAFT
    assert draft.diagnosis == "Major depressive disorder, recurrent"  # what was typed is kept
    assert response.context["missing"] == ["Allergies", "PHQ-9: every item"]
    assert "Allergies" in page and "PHQ-9: every item" in page
    assert Notification.objects.filter(kind=Notification.Kind.ASSESSMENT_SUBMITTED).count() == 0


def test_save_and_submit_works_in_one_step_for_a_complete_form(
    client, nurse, draft, course, psychiatrist
):
    client.force_login(nurse)
    response = client.post(
        reverse("protocols:assessment_edit", args=[draft.pk]),
        assessment_post_data(course, submit=""),
    )
    assert response.status_code == 302
    assert response.url == reverse("protocols:assessment_detail", args=[draft.pk])
    draft.refresh_from_db()
    assert draft.status == Assessment.Status.SUBMITTED
    assert draft.submitted_by == nurse
    assert draft.submitted_at is not None
    note = Notification.objects.get(kind=Notification.Kind.ASSESSMENT_SUBMITTED)
    assert note.recipient == psychiatrist
    reasons = [h.history_change_reason for h in draft.history.order_by("history_id")]
    assert reasons[-1] == "Submitted for sign-off"


def test_a_nurse_submits_a_complete_draft(client, nurse, complete_draft):
    client.force_login(nurse)
    response = client.post(reverse("protocols:assessment_submit", args=[complete_draft.pk]))
    assert response.status_code == 302
    assert response.url == reverse("protocols:assessment_detail", args=[complete_draft.pk])
    complete_draft.refresh_from_db()
    assert complete_draft.status == Assessment.Status.SUBMITTED


def test_editing_a_submitted_assessment_returns_it_to_draft(client, nurse, submitted, course):
    client.force_login(nurse)
    response = client.post(
        reverse("protocols:assessment_edit", args=[submitted.pk]),
        assessment_post_data(course, save="", allergies="Penicillin"),
    )
    assert response.status_code == 302
    submitted.refresh_from_db()
    assert submitted.status == Assessment.Status.DRAFT
    assert submitted.submitted_at is None
    assert submitted.allergies == "Penicillin"


@pytest.mark.parametrize("how", ["save_and_submit", "submit"])
def test_submitting_an_already_submitted_assessment_says_so(client, nurse, submitted, course, how):
    client.force_login(nurse)
    if how == "submit":
        response = client.post(reverse("protocols:assessment_submit", args=[submitted.pk]))
    else:
        response = client.post(
            reverse("protocols:assessment_edit", args=[submitted.pk]),
            assessment_post_data(course, submit=""),
        )
    submitted.refresh_from_db()
    assert submitted.status == Assessment.Status.SUBMITTED
    assert services.assessment_missing_items(submitted) == []
    messages = _messages(response)
    assert not any("missing" in m for m in messages), messages


def test_saving_an_unchanged_draft_writes_no_history(client, nurse, complete_draft, course):
    client.force_login(nurse)
    before = assessment_state(complete_draft)
    response = client.post(
        reverse("protocols:assessment_edit", args=[complete_draft.pk]),
        assessment_post_data(course, save=""),
    )
    assert response.status_code == 302
    assert assessment_state(complete_draft) == before


# --- signing ------------------------------------------------------------------------------------


def test_a_psychiatrist_approves_with_the_password(client, psychiatrist, submitted, course):
    client.force_login(psychiatrist)
    url = reverse("protocols:assessment_sign", args=[submitted.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert psychiatrist.printed_name in page.content.decode()

    response = client.post(url, {"decision": "approve", "password": TEST_PASSWORD})
    assert response.status_code == 302
    assert response.url == reverse("protocols:assessment_detail", args=[submitted.pk])
    submitted.refresh_from_db()
    assert submitted.status == Assessment.Status.APPROVED
    assert submitted.is_locked
    signature = Signature.objects.get()
    assert signature.signer == psychiatrist
    assert signature.printed_name == psychiatrist.printed_name
    assert signature.meaning == Signature.Meaning.APPROVED
    course.refresh_from_db()
    assert course.status == TreatmentCourse.Status.ACTIVE

    detail = client.get(response.url).content.decode()
    assert 'data-testid="signature"' in detail
    assert "Approved" in detail and psychiatrist.printed_name in detail
    assert 'data-testid="signature-invalid"' not in detail


def test_a_psychiatrist_declines_and_the_course_stays_pending(
    client, psychiatrist, submitted, course
):
    client.force_login(psychiatrist)
    response = client.post(
        reverse("protocols:assessment_sign", args=[submitted.pk]),
        {"decision": "decline", "password": TEST_PASSWORD},
    )
    assert response.status_code == 302
    submitted.refresh_from_db()
    assert submitted.status == Assessment.Status.NOT_APPROVED
    assert Signature.objects.get().meaning == Signature.Meaning.DECLINED
    course.refresh_from_db()
    assert course.status == TreatmentCourse.Status.ASSESSMENT_PENDING


@pytest.mark.parametrize("fixture", ["draft", "approved"])
def test_only_a_submitted_assessment_can_be_signed(client, psychiatrist, request, fixture):
    assessment = request.getfixturevalue(fixture)
    client.force_login(psychiatrist)
    before = _world()
    response = client.post(
        reverse("protocols:assessment_sign", args=[assessment.pk]),
        {"decision": "approve", "password": TEST_PASSWORD},
    )
    assert response.status_code == 302
    assert response.url == reverse("protocols:assessment_detail", args=[assessment.pk])
    assert services.ASSESSMENT_NOT_SUBMITTED in _messages(response)
    assert _world() == before


def test_a_signed_assessment_is_not_editable_and_says_why(client, nurse, approved, course):
    client.force_login(nurse)
    before = _world()
    url = reverse("protocols:assessment_edit", args=[approved.pk])
    for response in (client.get(url), client.post(url, assessment_post_data(course, save=""))):
        assert response.status_code == 302
        assert response.url == reverse("protocols:assessment_detail", args=[approved.pk])
    assert _world() == before


def test_the_signoff_queue_lists_submitted_assessments_with_a_count(
    client, psychiatrist, submitted
):
    client.force_login(psychiatrist)
    response = client.get(reverse("protocols:signoff_queue"))
    assert response.status_code == 200
    assert [row.assessment for row in response.context["rows"]] == [submitted]
    page = response.content.decode()
    assert 'data-testid="nav-count-sign-off">1<' in page
    assert reverse("protocols:assessment_sign", args=[submitted.pk]) in page


# --- addenda ------------------------------------------------------------------------------------


def test_a_nurse_adds_a_signed_addendum_and_the_original_stays(client, nurse, approved):
    client.force_login(nurse)
    original = Assessment.objects.filter(pk=approved.pk).values().get()
    url = reverse("protocols:addendum_new", args=[approved.pk])
    assert client.get(url).status_code == 200
    response = client.post(
        url, {"text": "Weight was 72 kg.", "reason": "Scale misread", "password": TEST_PASSWORD}
    )
    assert response.status_code == 302
    assert response.url == reverse("protocols:assessment_detail", args=[approved.pk])
    addendum = Addendum.objects.get()
    assert addendum.author == nurse
    assert addendum.is_locked
    assert Signature.objects.filter(meaning=Signature.Meaning.AUTHORED, signer=nurse).count() == 1
    assert Assessment.objects.filter(pk=approved.pk).values().get() == original
    detail = client.get(response.url).content.decode()
    assert "Weight was 72 kg." in detail and "Scale misread" in detail
    assert 'data-testid="signature-invalid"' not in detail


def test_a_draft_takes_no_addendum(client, nurse, draft):
    client.force_login(nurse)
    before = _world()
    response = client.post(
        reverse("protocols:addendum_new", args=[draft.pk]),
        {"text": "x", "reason": "y", "password": TEST_PASSWORD},
    )
    assert response.status_code == 302
    assert response.url == reverse("protocols:assessment_detail", args=[draft.pk])
    assert _world() == before


def test_a_wrong_password_on_an_addendum_is_recorded_and_nothing_is_added(client, nurse, approved):
    client.force_login(nurse)
    before = _world()
    response = client.post(
        reverse("protocols:addendum_new", args=[approved.pk]),
        {"text": "x", "reason": "y", "password": "not-my-password"},
    )
    assert response.status_code == 200
    assert "password" in response.context["form"].errors
    after = _world()
    assert after.pop("failures") == before.pop("failures") + 1
    assert after == before


# --- what the clinician reads -------------------------------------------------------------------


def _navbar(response) -> str:
    page = response.content.decode()
    start = page.index('<nav class="navbar')
    return page[start : page.index("</nav>", start)]


@pytest.mark.parametrize("screen", ["queue", "sign"])
def test_the_navigation_marks_only_the_current_section(client, psychiatrist, submitted, screen):
    client.force_login(psychiatrist)
    url = {
        "queue": reverse("protocols:signoff_queue"),
        "sign": reverse("protocols:assessment_sign", args=[submitted.pk]),
    }[screen]
    nav = _navbar(client.get(url))
    assert nav.count('aria-current="page"') <= 1
    protocols_link = nav.index(f'href="{reverse("protocols:list")}"')
    assert 'aria-current="page"' not in nav[protocols_link : nav.index("</a>", protocols_link)]


def test_labels_keep_their_capitals(client, nurse, draft):
    client.force_login(nurse)
    response = client.get(reverse("protocols:assessment_edit", args=[draft.pk]))
    assert response.context["form"].fields["maois"].label == "MAOIs"
    missing = services.assessment_missing_items(draft)
    assert "MAOIs: yes or no" in missing
    assert "Ketamine / PCP use" in missing


def test_the_cssrs_questions_carry_the_numbers_the_skip_hint_uses(client, nurse, draft):
    client.force_login(nurse)
    form = client.get(reverse("protocols:assessment_edit", args=[draft.pk])).context["form"]
    for number in range(1, 7):
        label = str(form.fields[f"cssrs_q{number}"].label)
        assert label.startswith((f"{number}.", f"Q{number}")), label


def test_a_pregnancy_status_contradicting_the_contraindication_cannot_be_submitted(
    nurse, draft, course
):
    services.assessment_update(
        assessment=draft, acting_user=nurse, **complete_fields(course, pregnancy="pregnant")
    )
    with pytest.raises(ValidationError) as caught:
        services.assessment_submit(assessment=draft, acting_user=nurse)
    assert any("says pregnant" in message for message in caught.value.messages)
    draft.refresh_from_db()
    assert draft.status == Assessment.Status.DRAFT


def test_a_pregnant_patient_is_not_approved_without_an_override_reason(
    client, nurse, psychiatrist, draft, course
):
    fields = complete_fields(course, pregnancy="pregnant")
    fields["contraindications"]["pregnancy"] = {"present": True, "note": ""}
    services.assessment_update(assessment=draft, acting_user=nurse, **fields)
    services.assessment_submit(assessment=draft, acting_user=nurse)
    client.force_login(psychiatrist)
    response = client.post(
        reverse("protocols:assessment_sign", args=[draft.pk]),
        {"decision": "approve", "password": TEST_PASSWORD},
    )
    draft.refresh_from_db()
    assert draft.status == Assessment.Status.SUBMITTED, "approved without an override reason"
    assert response.status_code == 200
