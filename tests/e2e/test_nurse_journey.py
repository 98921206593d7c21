"""A nurse's first patient, through the browser: log in, register, record consent (SPEC §U, §P)."""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Page, expect

from clinic.models import Role
from patients.forms import DOB_FUTURE
from patients.models import ConsentKind, ConsentRecord, Patient
from tests.factories import TEST_PASSWORD, ConsentTemplateFactory, UserFactory

MRN = "KT-2024/0042"


@pytest.fixture
def nurse(site):
    return UserFactory(
        username="nurse.jones",
        first_name="Alex",
        last_name="Jones",
        roles=[Role.NURSE],
        sites=[site],
        password=TEST_PASSWORD,
    )


@pytest.fixture
def ketamine_template():
    return ConsentTemplateFactory(kind=ConsentKind.KETAMINE_TREATMENT)


def log_in(page: Page, live_server, user, screenshot=None) -> None:
    """Through the login form, by keyboard: username, Tab, password, Enter."""
    page.goto(live_server.url + reverse("login"))
    expect(page.get_by_role("heading", name="Log in to Vigil")).to_be_visible()
    username = page.get_by_label("Username")
    expect(username).to_be_focused()
    if screenshot:
        screenshot("01-login")
    page.keyboard.type(user.username)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(TEST_PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(live_server.url + reverse("home"))


def test_nurse_registers_a_patient_and_records_consent(
    page: Page, live_server, site, nurse, ketamine_template, screenshot
):
    today = timezone.now().astimezone(ZoneInfo(site.time_zone)).date()

    log_in(page, live_server, nurse, screenshot)

    page.get_by_role("navigation", name="Main navigation").get_by_role(
        "link", name="Patients"
    ).click()
    expect(page.get_by_role("heading", name="Patients", exact=True)).to_be_visible()
    page.get_by_role("link", name="Register a patient").click()
    expect(page.get_by_role("heading", name=f"Register a patient at {site.name}")).to_be_visible()

    # The record number has the focus; the rest is typed field by field.
    expect(page.get_by_label("Medical record number")).to_be_focused()
    page.keyboard.type(MRN)
    page.get_by_label("Given name").fill("Maria")
    page.get_by_label("Family name").fill("Okafor")
    page.get_by_label("Date of birth").fill((today + timedelta(days=30)).isoformat())
    page.get_by_label("Sex").select_option(label="Female")
    page.get_by_label("Current weight (kg)").fill("68.5")
    page.get_by_label("Weight measured on").fill((today - timedelta(days=1)).isoformat())
    page.get_by_label("Current weight (kg)").press("Enter")

    # A date of birth in the future is refused, next to the field, and nothing is saved.
    date_of_birth = page.get_by_label("Date of birth")
    expect(page.get_by_text(DOB_FUTURE)).to_be_visible()
    expect(date_of_birth).to_have_class(re.compile(r"\bis-invalid\b"))
    expect(page.get_by_label("Family name")).to_have_value("Okafor")
    screenshot("02-register-error")
    assert not Patient.objects.exists()

    date_of_birth.fill("1985-05-17")
    date_of_birth.press("Enter")

    patient = Patient.objects.get(mrn=MRN)
    expect(page).to_have_url(live_server.url + reverse("patients:chart", args=[patient.pk]))
    expect(page.get_by_role("heading", name="Okafor, Maria")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Patient registered.")).to_be_visible()
    assert patient.home_site == site
    assert patient.created_by == nurse
    assert str(patient.weight_kg) == "68.5"

    page.get_by_role("link", name="Record consent").click()
    expect(page.get_by_role("heading", name="Record consent for")).to_be_visible()
    page.get_by_label("Consent document (version)").select_option(label=str(ketamine_template))
    page.get_by_label("Signature method").select_option(label="Signed on tablet")
    screenshot("03-consent-form")
    page.get_by_role("button", name="Record consent").click()

    expect(page).to_have_url(live_server.url + reverse("patients:chart", args=[patient.pk]))
    expect(page.get_by_role("status").filter(has_text="Consent recorded")).to_be_visible()
    summary_row = (
        page.get_by_test_id("consent-summary")
        .get_by_role("listitem")
        .filter(has_text=ConsentKind.KETAMINE_TREATMENT.label)
    )
    expect(
        summary_row.locator(f'[data-kind="{ConsentKind.KETAMINE_TREATMENT.value}"]')
    ).to_have_text("Valid")
    records = page.get_by_role("region", name="Consent records")
    expect(records.get_by_role("cell", name="Signed on tablet")).to_be_visible()
    expect(records.get_by_role("cell", name=nurse.printed_name)).to_be_visible()
    screenshot("04-chart-after-consent")

    consent = ConsentRecord.objects.get(patient=patient)
    assert consent.template == ketamine_template
    assert consent.witness == nurse
    assert consent.signature_method == ConsentRecord.SignatureMethod.TABLET
    assert consent.withdrawn_at is None


def test_nurse_navigation_shows_who_where_and_only_her_links(
    page: Page, live_server, site, nurse, screenshot
):
    log_in(page, live_server, nurse)

    nav = page.get_by_role("navigation", name="Main navigation")
    user = nav.get_by_test_id("current-user")
    expect(user).to_contain_text("Alex Jones")
    expect(user.locator(".badge")).to_have_text(["Nurse"])
    expect(nav.get_by_test_id("current-site")).to_have_text(site.name)

    # SPEC §U: nurses register patients and record consent, so they read the consent documents
    # (the role map grants patients.view_consenttemplate); they manage nothing.
    expect(nav.get_by_role("link", name="Patients")).to_be_visible()
    expect(nav.get_by_role("link", name="Consents")).to_be_visible()
    expect(nav.get_by_role("link", name="Admin", exact=True)).to_have_count(0)
    screenshot("05-nurse-home")

    nav.get_by_role("link", name="Consents").click()
    expect(page.get_by_role("heading", name="Consent templates")).to_be_visible()
    expect(page.get_by_role("link", name="New version")).to_have_count(0)
