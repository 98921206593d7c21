"""Patient and consent views: who may do what (SPEC §U), and the consent scan download."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from clinic.models import Role
from patients import services
from patients.models import ConsentKind, ConsentRecord, ConsentTemplate, Patient
from tests.factories import UserFactory
from tests.patients.helpers import MINIMAL_PDF, image_bytes, patient_form_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def consent(patient, nurse, ketamine_template):
    return services.consent_record(
        patient=patient,
        template=ketamine_template,
        acting_user=nurse,
        signature_method=ConsentRecord.SignatureMethod.TABLET,
    )


@pytest.fixture
def draft(administrator):
    return services.consent_template_create(
        acting_user=administrator, kind=ConsentKind.DATA_SHARING, title="Draft", text="Draft."
    )


@pytest.fixture
def other_site_gp(other_site):
    return UserFactory(username="ny-gp", roles=[Role.GP], sites=[other_site])


@pytest.fixture
def personas(nurse, psychiatrist, anesthesiologist, gp, administrator, outsider, other_site_gp):
    return {
        "nurse": nurse,
        "psychiatrist": psychiatrist,
        "anesthesiologist": anesthesiologist,
        "gp": gp,
        "administrator": administrator,
        "outsider": outsider,
        "other-site-gp": other_site_gp,
    }


def url_for(name: str, patient, consent, template) -> str:
    args = {
        "list": [],
        "register": [],
        "template_list": [],
        "template_new": [],
        "chart": [patient.pk],
        "edit": [patient.pk],
        "void": [patient.pk],
        "consent_new": [patient.pk],
        "consent_withdraw": [consent.pk],
        "consent_scan": [consent.pk],
        "template_detail": [template.pk],
        "template_edit": [template.pk],
        "template_publish": [template.pk],
    }[name]
    return reverse(f"patients:{name}", args=args)


# (url name, persona, expected status of a GET)
GET_MATRIX = [
    ("list", "nurse", 200),
    ("list", "gp", 200),
    ("list", "administrator", 200),
    ("register", "nurse", 200),
    ("register", "psychiatrist", 200),
    ("register", "anesthesiologist", 403),
    ("register", "gp", 403),
    ("register", "administrator", 403),
    ("chart", "nurse", 200),
    ("chart", "gp", 200),
    ("chart", "administrator", 200),
    ("chart", "outsider", 404),
    ("chart", "other-site-gp", 404),
    ("edit", "nurse", 200),
    ("edit", "anesthesiologist", 200),
    ("edit", "gp", 403),
    ("edit", "administrator", 403),
    ("edit", "outsider", 404),
    ("void", "nurse", 200),
    ("void", "psychiatrist", 200),
    ("void", "anesthesiologist", 403),
    ("void", "gp", 403),
    ("void", "administrator", 403),
    ("void", "outsider", 404),
    ("consent_new", "nurse", 200),
    ("consent_new", "psychiatrist", 200),
    ("consent_new", "anesthesiologist", 403),
    ("consent_new", "gp", 403),
    ("consent_new", "administrator", 403),
    ("consent_new", "outsider", 404),
    ("consent_withdraw", "nurse", 200),
    ("consent_withdraw", "anesthesiologist", 403),
    ("consent_withdraw", "gp", 403),
    ("consent_withdraw", "administrator", 403),
    ("consent_withdraw", "outsider", 404),
    ("consent_withdraw", "other-site-gp", 404),
    ("template_list", "administrator", 200),
    ("template_list", "nurse", 200),
    ("template_list", "gp", 403),
    ("template_new", "administrator", 200),
    ("template_new", "nurse", 403),
    ("template_new", "psychiatrist", 403),
    ("template_detail", "administrator", 200),
    ("template_detail", "nurse", 200),
    ("template_detail", "gp", 403),
    ("template_edit", "administrator", 200),
    ("template_edit", "nurse", 403),
    ("template_publish", "administrator", 405),
]


@pytest.mark.parametrize(("name", "who", "expected"), GET_MATRIX)
def test_get_answers_by_role_and_site(
    client, personas, patient, consent, draft, name, who, expected
):
    client.force_login(personas[who])

    response = client.get(url_for(name, patient, consent, draft))

    assert response.status_code == expected


# (url name, persona, expected status of a POST that would otherwise succeed)
POST_REFUSALS = [
    ("register", "gp", 403),
    ("register", "administrator", 403),
    ("edit", "gp", 403),
    ("edit", "administrator", 403),
    ("edit", "outsider", 404),
    ("void", "anesthesiologist", 403),
    ("void", "administrator", 403),
    ("void", "outsider", 404),
    ("consent_new", "anesthesiologist", 403),
    ("consent_new", "administrator", 403),
    ("consent_new", "outsider", 404),
    ("consent_withdraw", "anesthesiologist", 403),
    ("consent_withdraw", "administrator", 403),
    ("consent_withdraw", "outsider", 404),
    ("template_new", "nurse", 403),
    ("template_edit", "nurse", 403),
    ("template_publish", "nurse", 403),
    ("template_publish", "psychiatrist", 403),
    ("list", "nurse", 405),
    ("chart", "nurse", 405),
    ("consent_scan", "nurse", 405),
    ("template_list", "administrator", 405),
    ("template_detail", "administrator", 405),
]


def valid_post(name, patient, template) -> dict:
    return {
        "register": patient_form_data(mrn="N-7777"),
        "edit": patient_form_data(mrn=patient.mrn, given_name="Changed"),
        "void": {"reason": "Registered in error."},
        "consent_new": {
            "template": ConsentTemplate.objects.published().first().pk,
            "signature_method": ConsentRecord.SignatureMethod.TABLET,
            "signed_at": "2026-01-05T10:00",
        },
        "consent_withdraw": {"reason": "Changed mind."},
        "template_new": {
            "kind": ConsentKind.DATA_SHARING,
            "title": "T",
            "text": "Text.",
            "validity_days": "365",
        },
        "template_edit": {"title": "T2", "text": "Changed.", "validity_days": "30"},
    }.get(name, {})


def snapshot():
    return (
        list(Patient.history.values_list("history_id", flat=True)),
        list(ConsentRecord.history.values_list("history_id", flat=True)),
        list(ConsentTemplate.history.values_list("history_id", flat=True)),
    )


@pytest.mark.parametrize(("name", "who", "expected"), POST_REFUSALS)
def test_a_refused_post_changes_nothing(
    client, personas, patient, consent, draft, name, who, expected
):
    client.force_login(personas[who])
    before = snapshot()

    response = client.post(url_for(name, patient, consent, draft), valid_post(name, patient, draft))

    assert response.status_code == expected
    assert snapshot() == before


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("list", "get"),
        ("register", "get"),
        ("register", "post"),
        ("chart", "get"),
        ("edit", "post"),
        ("void", "post"),
        ("consent_new", "post"),
        ("consent_withdraw", "post"),
        ("consent_scan", "get"),
        ("template_list", "get"),
        ("template_new", "post"),
        ("template_publish", "post"),
    ],
)
def test_anonymous_requests_are_sent_to_the_login_page_and_change_nothing(
    client, patient, consent, draft, name, method
):
    before = snapshot()
    url = url_for(name, patient, consent, draft)

    response = getattr(client, method)(url, valid_post(name, patient, draft))

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))
    assert snapshot() == before


@pytest.mark.parametrize("name", ["chart", "edit", "void", "consent_new"])
def test_an_unknown_patient_answers_404(client, nurse, name):
    client.force_login(nurse)

    response = client.get(reverse(f"patients:{name}", args=[987_654_321]))

    assert response.status_code == 404


# --- Happy paths --------------------------------------------------------------------------------


def test_a_nurse_registers_a_patient_at_the_current_site_and_lands_on_the_chart(
    client, nurse, site
):
    client.force_login(nurse)

    response = client.post(reverse("patients:register"), patient_form_data())

    patient = Patient.objects.get()
    assert response.url == reverse("patients:chart", args=[patient.pk])
    assert patient.home_site == site
    assert patient.created_by == nurse


def test_a_nurse_voids_a_registration_and_returns_to_the_list(client, nurse, patient):
    client.force_login(nurse)

    response = client.post(reverse("patients:void", args=[patient.pk]), {"reason": "Twice."})

    assert response.url == reverse("patients:list")
    patient.refresh_from_db()
    assert patient.is_voided


def test_a_nurse_records_consent_and_is_the_witness(client, nurse, patient, ketamine_template):
    client.force_login(nurse)

    response = client.post(
        reverse("patients:consent_new", args=[patient.pk]),
        {
            "template": ketamine_template.pk,
            "signature_method": ConsentRecord.SignatureMethod.VERBAL,
            "signed_at": "2026-01-05T10:00",
        },
    )

    assert response.url == reverse("patients:chart", args=[patient.pk])
    assert ConsentRecord.objects.get().witness == nurse


def test_an_administrator_creates_edits_and_publishes_a_template(client, administrator):
    client.force_login(administrator)

    created = client.post(
        reverse("patients:template_new"),
        {"kind": ConsentKind.DATA_SHARING, "title": "T", "text": "One.", "validity_days": "90"},
    )
    template = ConsentTemplate.objects.get()
    edited = client.post(
        reverse("patients:template_edit", args=[template.pk]),
        {"title": "T", "text": "Two.", "validity_days": "90"},
    )
    published = client.post(reverse("patients:template_publish", args=[template.pk]))

    detail = reverse("patients:template_detail", args=[template.pk])
    assert created.url == edited.url == published.url == detail
    template.refresh_from_db()
    assert template.text == "Two."
    assert template.is_published
    assert template.published_by == administrator


# --- Consent scans ------------------------------------------------------------------------------


@pytest.fixture
def scanned_consent(patient, nurse, ketamine_template):
    def make(content: bytes, name: str) -> ConsentRecord:
        return services.consent_record(
            patient=patient,
            template=ketamine_template,
            acting_user=nurse,
            signature_method=ConsentRecord.SignatureMethod.WET_SCANNED,
            scan=SimpleUploadedFile(name, content, content_type="text/html"),
        )

    return make


def download(client, consent):
    response = client.get(reverse("patients:consent_scan", args=[consent.pk]))
    # Consuming the stream lets the test client close the file (and not the database).
    body = b"".join(response.streaming_content) if response.status_code == 200 else b""
    return response, body


@pytest.mark.parametrize(
    ("content", "name", "content_type"),
    [
        (image_bytes("PNG"), "Hughes Amelia consent.pdf", "image/png"),
        (image_bytes("JPEG"), "consent.html", "image/jpeg"),
        (MINIMAL_PDF, "consent.png", "application/pdf"),
    ],
    ids=["png-named-pdf", "jpeg-named-html", "pdf-named-png"],
)
def test_the_scan_is_served_to_the_sites_staff_with_its_sniffed_type(
    client, nurse, gp, scanned_consent, content, name, content_type
):
    consent = scanned_consent(content, name)

    for reader in (nurse, gp):
        client.force_login(reader)
        response, body = download(client, consent)

        assert response.status_code == 200
        assert response["Content-Type"] == content_type
        assert body == content
        assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
        assert "no-store" in response["Cache-Control"]
        assert response["X-Content-Type-Options"] == "nosniff"
        disposition = response.get("Content-Disposition", "")
        assert disposition.startswith("inline")
        assert "Hughes" not in disposition
        assert "consent." not in disposition


def test_the_scan_of_another_sites_patient_answers_404(
    client, outsider, other_site_gp, scanned_consent
):
    consent = scanned_consent(image_bytes("PNG"), "scan.png")

    for reader in (outsider, other_site_gp):
        client.force_login(reader)
        response, body = download(client, consent)
        assert response.status_code == 404
        assert body == b""


def test_a_consent_without_a_scan_answers_404_for_its_scan(client, nurse, consent):
    client.force_login(nurse)

    response, _ = download(client, consent)

    assert response.status_code == 404
