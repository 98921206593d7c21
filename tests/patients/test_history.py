"""Change history (SPEC §C1): who, when, what and why, for web edits and for seed_demo."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from clinic.models import Site, User
from patients.models import ConsentRecord, ConsentTemplate, Patient
from tests.patients.helpers import patient_form_data

pytestmark = pytest.mark.django_db

HISTORY_MODELS = (Site, User, Patient, ConsentTemplate, ConsentRecord)


def edit_data(patient: Patient, **overrides) -> dict:
    """The edit form as the browser sends it back: the patient's current values."""
    data = {
        name: "" if getattr(patient, name) is None else str(getattr(patient, name))
        for name in patient_form_data()
    }
    data.update(overrides)
    return data


def history_counts() -> dict[str, int]:
    return {model.__name__: model.history.count() for model in HISTORY_MODELS}


def row_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in HISTORY_MODELS}


# --- Web edits ----------------------------------------------------------------------------------


def test_registering_through_the_web_records_the_nurse_as_author(client, nurse):
    client.force_login(nurse)
    client.post(reverse("patients:register"), patient_form_data())

    patient = Patient.objects.get()
    (row,) = patient.history.all()
    assert row.history_type == "+"
    assert row.history_user == nurse
    assert row.history_change_reason == "Registered"


def test_a_web_edit_adds_one_history_row_naming_the_user_and_the_changed_fields(
    client, nurse, patient
):
    client.force_login(nurse)
    before = patient.history.count()

    response = client.post(
        reverse("patients:edit", args=[patient.pk]),
        edit_data(patient, given_name="Renée", phone="0113 000 1111"),
    )

    assert response.status_code == 302
    assert patient.history.count() == before + 1
    latest = patient.history.latest("history_date")
    assert latest.history_type == "~"
    assert latest.history_user == nurse
    assert latest.history_change_reason == "Edited: given_name, phone"
    assert latest.given_name == "Renée"
    previous = latest.prev_record
    assert {change.field for change in latest.diff_against(previous).changes} == {
        "given_name",
        "phone",
    }


def test_a_web_edit_by_another_user_is_attributed_to_that_user(
    client, nurse, psychiatrist, patient
):
    client.force_login(psychiatrist)
    client.post(reverse("patients:edit", args=[patient.pk]), edit_data(patient, gp_name="Dr Ng"))

    latest = patient.history.latest("history_date")
    assert latest.history_user == psychiatrist
    assert latest.history_change_reason == "Edited: gp_name"


def test_saving_the_edit_form_unchanged_adds_no_history_row(client, nurse, patient):
    client.force_login(nurse)
    before = patient.history.count()

    response = client.post(reverse("patients:edit", args=[patient.pk]), edit_data(patient))

    assert response.status_code == 302
    assert patient.history.count() == before


def test_an_invalid_edit_adds_no_history_row(client, nurse, patient):
    client.force_login(nurse)
    before = patient.history.count()

    response = client.post(
        reverse("patients:edit", args=[patient.pk]), edit_data(patient, date_of_birth="soon")
    )

    assert response.status_code == 200
    assert patient.history.count() == before


def test_voiding_records_the_reason_and_the_user_in_history(client, nurse, patient):
    client.force_login(nurse)

    response = client.post(
        reverse("patients:void", args=[patient.pk]),
        {"reason": "  Duplicate of N-1001, registered twice.  "},
    )

    assert response.status_code == 302
    patient.refresh_from_db()
    assert patient.void_reason == "Duplicate of N-1001, registered twice."
    assert patient.voided_by == nurse
    latest = patient.history.latest("history_date")
    assert latest.history_user == nurse
    assert latest.history_change_reason == "Voided: Duplicate of N-1001, registered twice."
    assert latest.voided_at == patient.voided_at


def test_recording_and_withdrawing_consent_attribute_each_row_to_the_acting_user(
    client, nurse, psychiatrist, patient, ketamine_template
):
    client.force_login(nurse)
    client.post(
        reverse("patients:consent_new", args=[patient.pk]),
        {
            "template": ketamine_template.pk,
            "signature_method": ConsentRecord.SignatureMethod.VERBAL,
            "signed_at": "2026-01-05T10:00",
        },
    )
    consent = ConsentRecord.objects.get()
    assert consent.witness == nurse

    client.force_login(psychiatrist)
    response = client.post(
        reverse("patients:consent_withdraw", args=[consent.pk]),
        {"reason": "Patient no longer wishes treatment."},
    )
    assert response.status_code == 302

    recorded, withdrawn = consent.history.order_by("history_date", "history_id")
    assert recorded.history_type == "+"
    assert recorded.history_user == nurse
    assert recorded.history_change_reason == "Consent recorded"
    assert withdrawn.history_type == "~"
    assert withdrawn.history_user == psychiatrist
    assert withdrawn.history_change_reason == "Withdrawn: Patient no longer wishes treatment."
    assert withdrawn.withdrawn_by == psychiatrist


def test_creating_and_publishing_a_template_attribute_each_row_to_the_administrator(
    client, administrator
):
    client.force_login(administrator)
    client.post(
        reverse("patients:template_new"),
        {"kind": "data-sharing", "title": "GP letter", "text": "Text.", "validity_days": "365"},
    )
    template = ConsentTemplate.objects.get()
    client.post(reverse("patients:template_publish", args=[template.pk]))

    created, published = template.history.order_by("history_date", "history_id")
    assert (created.history_user, created.history_change_reason) == (
        administrator,
        "Draft created",
    )
    assert (published.history_user, published.history_change_reason) == (
        administrator,
        "Published",
    )


# --- seed_demo ----------------------------------------------------------------------------------


@pytest.fixture
def seed(settings):
    settings.DEBUG = True

    def run(*args: str) -> str:
        out = StringIO()
        call_command("seed_demo", *args, stdout=out)
        return out.getvalue()

    return run


@pytest.fixture
def service_account(settings):
    return User.objects.get(username=settings.SERVICE_ACCOUNT_USERNAME)


def test_seed_demo_attributes_every_history_row_it_writes_to_the_service_account(
    seed, service_account
):
    before = {
        model: set(model.history.values_list("history_id", flat=True)) for model in HISTORY_MODELS
    }

    seed()

    assert Patient.objects.count() == 12
    for model in HISTORY_MODELS:
        new_rows = model.history.exclude(history_id__in=before[model])
        assert new_rows.exists(), model.__name__
        authors = set(new_rows.values_list("history_user__username", flat=True))
        assert authors == {service_account.username}, model.__name__
        assert not new_rows.filter(history_change_reason__in=["", None]).exists(), model.__name__


def test_seed_demo_consents_are_witnessed_by_staff_but_written_by_the_service_account(
    seed, service_account
):
    seed()

    for consent in ConsentRecord.objects.all():
        assert consent.witness != service_account
        assert not consent.witness.is_service_account
        assert consent.history.earliest("history_date").history_user == service_account
    withdrawn = ConsentRecord.objects.exclude(withdrawn_at=None)
    assert withdrawn.exists()
    assert set(withdrawn.values_list("withdrawn_by", flat=True)) == {service_account.pk}


def test_seed_demo_run_twice_adds_no_patients_consents_or_history(seed):
    seed()
    rows, history = row_counts(), history_counts()

    output = seed()

    assert row_counts() == rows
    assert history_counts() == history
    assert "0 new patients" in output


def test_seed_demo_if_empty_leaves_a_database_with_patients_alone(seed, patient):
    rows, history = row_counts(), history_counts()

    output = seed("--if-empty")

    assert row_counts() == rows
    assert history_counts() == history
    assert "not loaded" in output


def test_seed_demo_refuses_to_run_without_debug_and_saves_nothing(settings):
    settings.DEBUG = False
    rows, history = row_counts(), history_counts()

    with pytest.raises(CommandError, match="DJANGO_DEBUG=0"):
        call_command("seed_demo", stdout=StringIO())

    assert row_counts() == rows
    assert history_counts() == history
