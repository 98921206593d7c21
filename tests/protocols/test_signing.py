"""Electronic signatures and locking of pre-treatment assessments (SPEC §S1–S5): signing with the
password, every refusal leaving nothing behind, every path that could change a signed record,
tampering detected as *signature invalid*, addenda, and the canonical serialization."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.contrib.messages import get_messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import dateformat, timezone

from clinic import signatures
from clinic.models import Addendum, RecordLocked, Role, Signature, SignatureFailure
from clinic.services import service_account
from protocols import services
from protocols.models import Assessment
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SIGNATURE_INVALID = "Signature invalid"
WRONG = "not-the-password"


def signatures_of(record) -> list[Signature]:
    return list(
        Signature.objects.filter(
            content_type=ContentType.objects.get_for_model(record), object_id=record.pk
        ).order_by("id")
    )


def failures_for(record, user) -> int:
    return SignatureFailure.objects.filter(
        user=user, content_type=ContentType.objects.get_for_model(record), object_id=record.pk
    ).count()


def snapshot(assessment: Assessment) -> tuple[dict, int, int]:
    """The stored row, the signatures over it and its addenda: what a refusal must not change."""
    content_type = ContentType.objects.get_for_model(Assessment)
    return (
        Assessment.objects.values().get(pk=assessment.pk),
        Signature.objects.filter(content_type=content_type, object_id=assessment.pk).count(),
        Addendum.objects.filter(content_type=content_type, object_id=assessment.pk).count(),
    )


def sign(assessment, signer, password, *, approve=True, override_reason=""):
    return services.assessment_sign(
        assessment=assessment,
        signer=signer,
        password=password,
        approve=approve,
        override_reason=override_reason,
    )


@pytest.fixture
def approved(submitted, psychiatrist, password) -> Assessment:
    sign(submitted, psychiatrist, password)
    return Assessment.objects.get(pk=submitted.pk)


def fresh(assessment: Assessment) -> Assessment:
    return Assessment.objects.get(pk=assessment.pk)


# --- Signing -------------------------------------------------------------------------------------


def test_a_psychiatrist_signs_a_submitted_assessment_with_the_password(
    submitted, psychiatrist, password
):
    before = timezone.now()

    sign(submitted, psychiatrist, password)

    after = timezone.now()
    assessment = fresh(submitted)
    assert assessment.status == Assessment.Status.APPROVED
    assert assessment.locked_at is not None
    assert assessment.is_locked
    (signature,) = signatures_of(assessment)
    assert signature.signer == psychiatrist
    assert signature.printed_name == psychiatrist.printed_name
    assert psychiatrist.get_full_name()  # the printed name is the full name, not the username
    assert signature.meaning == Signature.Meaning.APPROVED
    assert before <= signature.signed_at <= after
    assert signature.signed_at.utcoffset() == timedelta(0)
    assert assessment.signed_at == assessment.locked_at == signature.signed_at
    assert re.fullmatch(r"[0-9a-f]{64}", signature.content_sha256)
    assert signatures.verify(signature, assessment) is True


def test_the_stored_hash_is_the_sha256_of_the_canonical_signed_content(approved):
    (signature,) = signatures_of(approved)
    payload = {
        "model": "protocols.assessment",
        "pk": approved.pk,
        "content": approved.signed_content(),
        "meaning": signature.meaning,
        "signer": signature.signer_id,
        "printed_name": signature.printed_name,
        "signed_at": signature.signed_at,
    }

    expected = hashlib.sha256(signatures.canonical_json(payload).encode()).hexdigest()

    assert signature.content_sha256 == expected


def test_the_printed_name_is_kept_as_it_was_when_signing(approved, psychiatrist):
    (signature,) = signatures_of(approved)
    signed_as = psychiatrist.printed_name
    psychiatrist.last_name = "Renamed-After-Marriage"
    psychiatrist.save()

    signature.refresh_from_db()

    assert signature.printed_name == signed_as
    assert signatures.verify(signature, fresh(approved)) is True


def test_the_detail_page_shows_the_signature_with_name_zone_and_meaning(
    client, approved, psychiatrist
):
    (signature,) = signatures_of(approved)
    local = timezone.localtime(signature.signed_at, ZoneInfo(approved.patient.home_site.time_zone))
    client.force_login(psychiatrist)

    page = client.get(reverse("protocols:assessment_detail", args=[approved.pk])).content.decode()

    assert psychiatrist.printed_name in page
    assert "Approved" in page
    assert dateformat.format(local, "j M Y H:i:s T (O)") in page
    assert SIGNATURE_INVALID not in page


def test_signing_through_the_view_locks_the_assessment(client, submitted, psychiatrist, password):
    client.force_login(psychiatrist)

    response = client.post(
        reverse("protocols:assessment_sign", args=[submitted.pk]),
        {"decision": "approve", "override_reason": "", "password": password},
    )

    assert response.status_code == 302
    assert response.url == reverse("protocols:assessment_detail", args=[submitted.pk])
    assert fresh(submitted).status == Assessment.Status.APPROVED
    assert len(signatures_of(submitted)) == 1


# --- Refusals: nothing changes -------------------------------------------------------------------


def test_a_wrong_password_signs_nothing_and_records_a_failed_attempt(submitted, psychiatrist):
    before = snapshot(submitted)

    with pytest.raises(ValidationError) as caught:
        sign(submitted, psychiatrist, WRONG)

    assert caught.value.message_dict == {"password": [signatures.WRONG_PASSWORD]}
    assert snapshot(submitted) == before
    # Recorded before the signing transaction opens, so the refusal does not roll it back.
    assert failures_for(submitted, psychiatrist) == 1
    failure = SignatureFailure.objects.get(user=psychiatrist)
    assert failure.reason == "wrong password"


def test_an_empty_password_is_a_failed_attempt_too(submitted, psychiatrist):
    before = snapshot(submitted)

    with pytest.raises(ValidationError):
        sign(submitted, psychiatrist, "")

    assert snapshot(submitted) == before
    assert failures_for(submitted, psychiatrist) == 1


def test_a_wrong_password_through_the_view_shows_a_field_error_and_keeps_the_attempt(
    client, submitted, psychiatrist
):
    before = snapshot(submitted)
    client.force_login(psychiatrist)

    response = client.post(
        reverse("protocols:assessment_sign", args=[submitted.pk]),
        {"decision": "approve", "override_reason": "", "password": WRONG},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["password"] == [signatures.WRONG_PASSWORD]
    assert snapshot(submitted) == before
    assert failures_for(submitted, psychiatrist) == 1


def test_a_nurse_cannot_sign(submitted, nurse, password):
    before = snapshot(submitted)

    with pytest.raises(PermissionDenied):
        sign(submitted, nurse, password)

    assert snapshot(submitted) == before
    assert not SignatureFailure.objects.exists()


def test_a_nurse_gets_403_from_the_sign_view(client, submitted, nurse, password):
    before = snapshot(submitted)
    client.force_login(nurse)

    response = client.post(
        reverse("protocols:assessment_sign", args=[submitted.pk]),
        {"decision": "approve", "password": password},
    )

    assert response.status_code == 403
    assert snapshot(submitted) == before


def test_an_inactive_psychiatrist_cannot_sign(submitted, psychiatrist, password):
    psychiatrist.is_active = False
    psychiatrist.save()
    before = snapshot(submitted)

    with pytest.raises(PermissionDenied):
        sign(submitted, psychiatrist, password)

    assert snapshot(submitted) == before


def test_a_psychiatrist_of_another_site_cannot_sign(submitted, other_site, password):
    elsewhere = UserFactory(
        username="psychiatrist-elsewhere", roles=[Role.PSYCHIATRIST], sites=[other_site]
    )
    before = snapshot(submitted)

    with pytest.raises(PermissionDenied):
        sign(submitted, elsewhere, password)

    assert snapshot(submitted) == before


def test_the_service_account_cannot_sign_even_with_the_role_the_site_and_a_password(
    submitted, site, password
):
    robot = service_account()
    robot.groups.add(Group.objects.get(name=Role.PSYCHIATRIST))
    robot.sites.add(site)
    robot.set_password(password)
    robot.save()
    before = snapshot(submitted)

    with pytest.raises(PermissionDenied) as caught:
        sign(submitted, robot, password)

    assert str(caught.value) == signatures.SERVICE_ACCOUNT_SIGNER
    assert snapshot(submitted) == before


def test_signing_twice_is_refused(approved, psychiatrist, password):
    before = snapshot(approved)

    for approve in (True, False):
        with pytest.raises(ValidationError) as caught:
            sign(approved, psychiatrist, password, approve=approve)
        assert caught.value.messages == [services.ASSESSMENT_NOT_SUBMITTED]

    assert snapshot(approved) == before
    assert len(signatures_of(approved)) == 1


def test_a_draft_cannot_be_signed(complete_draft, psychiatrist, password):
    before = snapshot(complete_draft)

    with pytest.raises(ValidationError) as caught:
        sign(complete_draft, psychiatrist, password)

    assert caught.value.messages == [services.ASSESSMENT_NOT_SUBMITTED]
    assert snapshot(complete_draft) == before


# --- A signed assessment is locked on every path (§S3) ------------------------------------------


def test_the_edit_view_refuses_a_signed_assessment_with_a_message(client, approved, nurse):
    before = snapshot(approved)
    client.force_login(nurse)

    response = client.post(
        reverse("protocols:assessment_edit", args=[approved.pk]),
        {"diagnosis": "Changed after signing", "sbp": "130", "dbp": "85"},
    )

    assert response.status_code == 302
    assert response.url == reverse("protocols:assessment_detail", args=[approved.pk])
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "This assessment is signed. Corrections are addenda."
    ]
    assert snapshot(approved) == before


def test_the_draft_service_refuses_a_signed_assessment(approved, nurse):
    before = snapshot(approved)

    with pytest.raises(ValidationError) as caught:
        services.assessment_update(assessment=approved, acting_user=nurse, diagnosis="Changed")

    assert caught.value.messages == [services.ASSESSMENT_NOT_EDITABLE]
    assert snapshot(approved) == before


@pytest.mark.parametrize("update_fields", [None, ["diagnosis"]], ids=["save", "update-fields"])
def test_model_save_refuses_a_signed_assessment(approved, update_fields):
    before = snapshot(approved)
    assessment = fresh(approved)
    assessment.diagnosis = "Changed"

    with pytest.raises(RecordLocked):
        assessment.save(update_fields=update_fields)

    assert snapshot(approved) == before


def test_a_queryset_update_refuses_a_signed_assessment(approved):
    before = snapshot(approved)

    with pytest.raises(RecordLocked):
        Assessment.objects.filter(pk=approved.pk).update(diagnosis="Changed")

    assert snapshot(approved) == before


def test_queryset_bulk_update_refuses_a_signed_assessment(approved):
    before = snapshot(approved)
    assessment = fresh(approved)
    assessment.diagnosis = "Changed"

    # bulk_update runs in atomic(savepoint=False); a savepoint keeps the test's transaction usable.
    with pytest.raises(RecordLocked), transaction.atomic():
        Assessment.objects.bulk_update([assessment], ["diagnosis"])

    assert snapshot(approved) == before


def test_a_bulk_update_through_the_related_manager_refuses_a_signed_assessment(approved):
    before = snapshot(approved)

    with pytest.raises(RecordLocked):
        approved.course.assessments.update(diagnosis="Changed")

    assert snapshot(approved) == before


@pytest.mark.parametrize("how", ["queryset", "instance"])
def test_a_signed_assessment_cannot_be_deleted(approved, how):
    before = snapshot(approved)

    with pytest.raises(RecordLocked):
        if how == "queryset":
            Assessment.objects.filter(pk=approved.pk).delete()
        else:
            fresh(approved).delete()

    assert snapshot(approved) == before


def test_the_base_manager_bulk_update_is_refused_by_the_database(approved):
    """`_base_manager` is a plain Manager: only the trigger stands behind it."""
    before = snapshot(approved)

    with pytest.raises(DatabaseError), transaction.atomic():
        Assessment._base_manager.filter(pk=approved.pk).update(diagnosis="Changed")

    assert snapshot(approved) == before


def admin_change_url(assessment: Assessment) -> str:
    return reverse("admin:protocols_assessment_change", args=[assessment.pk])


@pytest.fixture
def superuser(site):
    return UserFactory(username="root", is_superuser=True, is_staff=True, sites=[site])


def test_the_admin_change_view_refuses_a_superuser_post_with_403(client, approved, superuser):
    before = snapshot(approved)
    client.force_login(superuser)

    response = client.post(admin_change_url(approved), {"diagnosis": "Changed in admin"})

    assert response.status_code == 403
    assert snapshot(approved) == before


def test_the_admin_shows_a_signed_assessment_read_only(client, approved, superuser):
    client.force_login(superuser)

    response = client.get(admin_change_url(approved))

    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    assert response.context["has_delete_permission"] is False


# --- Tampering below every guard is detected (§S3) ----------------------------------------------


TAMPER_SQL = {
    "diagnosis": ("UPDATE protocols_assessment SET diagnosis = %s WHERE id = %s", "Tampered"),
    "sbp": ("UPDATE protocols_assessment SET sbp = %s WHERE id = %s", 99),
    "override_reason": (
        "UPDATE protocols_assessment SET override_reason = %s WHERE id = %s",
        "Added later",
    ),
}


def tamper(assessment: Assessment, column: str) -> None:
    """Change a signed row underneath the lock trigger, inside the test's transaction."""
    sql, value = TAMPER_SQL[column]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")  # triggers off
            try:
                cursor.execute(sql, [value, assessment.pk])
            finally:
                cursor.execute("SET session_replication_role = origin")
        else:
            cursor.execute("DROP TRIGGER protocols_assessment_locked")
            cursor.execute(sql, [value, assessment.pk])


@pytest.mark.parametrize("column", sorted(TAMPER_SQL))
def test_a_change_below_the_trigger_makes_the_signature_invalid(
    client, approved, psychiatrist, column
):
    (signature,) = signatures_of(approved)
    assert signatures.verify(signature, fresh(approved)) is True

    tamper(approved, column)

    assert signatures.verify(signature, fresh(approved)) is False
    client.force_login(psychiatrist)
    response = client.get(reverse("protocols:assessment_detail", args=[approved.pk]))
    assert response.status_code == 200
    assert SIGNATURE_INVALID in response.content.decode()
    chart = client.get(reverse("patients:chart", args=[approved.patient_id]))
    assert SIGNATURE_INVALID in chart.content.decode()


def test_a_raw_sql_update_of_a_signed_assessment_is_refused_by_the_database(approved):
    before = snapshot(approved)

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE protocols_assessment SET diagnosis = %s WHERE id = %s", ["Raw", approved.pk]
        )

    assert snapshot(approved) == before


def test_a_raw_sql_update_of_a_draft_is_allowed(complete_draft):
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE protocols_assessment SET diagnosis = %s WHERE id = %s",
            ["Raw draft edit", complete_draft.pk],
        )

    assert fresh(complete_draft).diagnosis == "Raw draft edit"


def test_a_signature_row_cannot_be_rewritten_in_the_database(approved):
    (signature,) = signatures_of(approved)

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE clinic_signature SET content_sha256 = %s WHERE id = %s",
            ["0" * 64, signature.pk],
        )

    signature.refresh_from_db()
    assert signatures.verify(signature, fresh(approved)) is True


# --- Addenda (§S4) ------------------------------------------------------------------------------


def add_addendum(record, author, password, text="Weight was 72 kg.", reason="Scale misread"):
    return signatures.addendum_add(
        record=record, author=author, password=password, text=text, reason=reason
    )


def test_an_addendum_is_signed_locked_and_leaves_the_original_unchanged(
    approved, psychiatrist, password
):
    before = Assessment.objects.values().get(pk=approved.pk)
    (original,) = signatures_of(approved)

    addendum = add_addendum(approved, psychiatrist, password)

    addendum.refresh_from_db()
    assert addendum.is_locked
    assert (addendum.content_type.model_class(), addendum.object_id) == (Assessment, approved.pk)
    assert (addendum.text, addendum.reason, addendum.author) == (
        "Weight was 72 kg.",
        "Scale misread",
        psychiatrist,
    )
    (signature,) = signatures_of(addendum)
    assert signature.meaning == Signature.Meaning.AUTHORED
    assert signature.signer == psychiatrist
    assert signatures.verify(signature, addendum) is True
    assert Assessment.objects.values().get(pk=approved.pk) == before
    assert signatures_of(approved) == [original]
    assert signatures.verify(original, fresh(approved)) is True


def test_a_signed_addendum_is_itself_locked(approved, psychiatrist, password):
    addendum = add_addendum(approved, psychiatrist, password)
    addendum = Addendum.objects.get(pk=addendum.pk)
    addendum.text = "Rewritten"

    with pytest.raises(RecordLocked):
        addendum.save()
    with pytest.raises(RecordLocked):
        Addendum.objects.filter(pk=addendum.pk).update(text="Rewritten")


def test_the_detail_page_shows_the_addendum_under_the_original(
    client, approved, psychiatrist, password
):
    add_addendum(approved, psychiatrist, password, text="Allergy to latex omitted.")
    client.force_login(psychiatrist)

    page = client.get(reverse("protocols:assessment_detail", args=[approved.pk])).content.decode()

    original_at = page.index("Approved</strong> by")
    addenda_at = page.index('id="h-addenda"')
    text_at = page.index("Allergy to latex omitted.")
    authored_at = page.index("Authored</strong> by", text_at)
    assert original_at < addenda_at < text_at < authored_at
    assert "Reason: Scale misread" in page
    assert SIGNATURE_INVALID not in page


def test_an_addendum_with_a_wrong_password_is_refused_and_recorded(approved, psychiatrist):
    before = snapshot(approved)

    with pytest.raises(ValidationError) as caught:
        add_addendum(approved, psychiatrist, WRONG)

    assert caught.value.message_dict == {"password": [signatures.WRONG_PASSWORD]}
    assert snapshot(approved) == before
    assert not Addendum.objects.exists()
    assert failures_for(approved, psychiatrist) == 1


def test_an_addendum_on_a_draft_is_refused(complete_draft, psychiatrist, password):
    before = snapshot(complete_draft)

    with pytest.raises(ValidationError):
        add_addendum(complete_draft, psychiatrist, password)

    assert snapshot(complete_draft) == before
    assert not Addendum.objects.exists()
    assert not SignatureFailure.objects.exists()


@pytest.mark.parametrize(
    ("text", "reason", "field"), [(" ", "why", "text"), ("what", "", "reason")]
)
def test_an_addendum_needs_text_and_reason(approved, psychiatrist, password, text, reason, field):
    with pytest.raises(ValidationError) as caught:
        add_addendum(approved, psychiatrist, password, text=text, reason=reason)

    assert set(caught.value.message_dict) == {field}
    assert not Addendum.objects.exists()


# --- Canonical serialization --------------------------------------------------------------------


def test_canonical_json_sorts_keys_at_every_level_without_whitespace():
    one = {"b": 1, "a": {"d": [1, 2], "c": None}}
    two = {"a": {"c": None, "d": [1, 2]}, "b": 1}

    assert signatures.canonical_json(one) == signatures.canonical_json(two)
    assert signatures.canonical_json(one) == '{"a":{"c":null,"d":[1,2]},"b":1}'


def test_canonical_json_keeps_decimals_exact():
    assert signatures.canonical_json({"w": Decimal("70.1")}) == '{"w":"70.1"}'
    assert signatures.canonical_json({"w": Decimal("0.1") + Decimal("0.2")}) == '{"w":"0.3"}'


def test_canonical_json_writes_the_same_instant_the_same_way_in_any_zone():
    in_utc = datetime(2026, 7, 1, 12, 0, 0, 123456, tzinfo=UTC)
    in_london = in_utc.astimezone(ZoneInfo("Europe/London"))
    in_new_york = in_utc.astimezone(ZoneInfo("America/New_York"))

    texts = {signatures.canonical_json({"t": t}) for t in (in_utc, in_london, in_new_york)}

    assert texts == {'{"t":"2026-07-01T12:00:00.123456+00:00"}'}


def test_canonical_json_keeps_non_ascii_text_as_is():
    assert signatures.canonical_json({"note": "SBP ≥ 180 — café"}) == (
        '{"note":"SBP ≥ 180 — café"}'
    )


def test_the_signed_content_hashes_the_same_after_a_reload(approved):
    (signature,) = signatures_of(approved)

    first = signatures.canonical_json(fresh(approved).signed_content())
    second = signatures.canonical_json(fresh(approved).signed_content())

    assert first == second
    assert signatures.verify(signature, fresh(approved)) is True
