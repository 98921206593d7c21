"""Step 1 through the browser: a nurse opens a course and fills the pre-treatment assessment; the
responsible psychiatrist reviews it from the sign-off queue and signs it (SPEC §A, §S)."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from clinic.models import Role, Signature
from protocols import instruments
from protocols.models import Assessment, Protocol, TreatmentCourse
from tests.e2e.test_nurse_journey import log_in
from tests.factories import TEST_PASSWORD, PatientFactory, UserFactory

pytestmark = pytest.mark.e2e

PHQ9 = [2, 2, 2, 1, 1, 1, 1, 1, 0]  # 11, moderate; item 9 "not at all": no suicide-risk flag
GAD7 = [2, 1, 1, 1, 1, 1, 1]  # 8, mild


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
def psychiatrist(site):
    return UserFactory(
        username="dr.shah",
        first_name="Priya",
        last_name="Shah",
        roles=[Role.PSYCHIATRIST],
        sites=[site],
        password=TEST_PASSWORD,
    )


@pytest.fixture
def patient(site, nurse):
    return PatientFactory(
        home_site=site,
        created_by=nurse,
        mrn="KT-2024/0042",
        given_name="Maria",
        family_name="Okafor",
        weight_kg=68.5,
    )


def answer(page: Page, question: str | re.Pattern, option: str) -> None:
    """Click a radio by its label inside the group named by its legend."""
    if isinstance(question, str):
        # The whole question, after its number if the form numbers it ("2. Have you…").
        literal = re.sub(r"([.^$*+?()\[\]{}|\\/])", r"\\\1", question)  # Playwright-safe
        pattern = re.compile(r"^(\d+b?\. )?" + literal + "$")
        group = page.get_by_role("group", name=pattern)
    else:
        group = page.get_by_role("group", name=question)
    group.get_by_label(option, exact=True).check()


def type_into(page: Page, label: str, text: str) -> None:
    """Focus by label, then type as a keyboard would."""
    field = page.get_by_label(label, exact=True)
    field.focus()
    page.keyboard.type(text)


def log_out(page: Page, live_server) -> None:
    """The user menu is a Bootstrap dropdown; log out is inside it."""
    page.get_by_test_id("current-user").click()
    logout = page.get_by_role("button", name="Log out")
    expect(logout).to_be_visible()
    logout.click()
    expect(page).to_have_url(re.compile(re.escape(live_server.url + reverse("login"))))


def test_nurse_fills_the_assessment_and_the_psychiatrist_signs_it(
    page: Page,
    browser: Browser,
    browser_context_args: dict,
    live_server,
    site,
    nurse,
    psychiatrist,
    patient,
    screenshot,
    screenshot_dir,
):
    protocol = Protocol.objects.get(slug="iv-ketamine")
    rules = protocol.versions.published().latest("version").parsed

    # --- the nurse: chart, course, assessment ----------------------------------------------------
    log_in(page, live_server, nurse)
    page.get_by_role("navigation", name="Main navigation").get_by_role(
        "link", name="Patients"
    ).click()
    page.get_by_role("link", name="Okafor, Maria").click()
    expect(page.get_by_role("heading", name="Okafor, Maria", exact=True)).to_be_visible()
    step1 = page.get_by_role("region", name=re.compile("Step 1"))
    expect(step1.get_by_text("No treatment course yet.")).to_be_visible()

    step1.get_by_role("link", name="Open a course").click()
    expect(
        page.get_by_role("heading", name="Open a treatment course for Maria Okafor")
    ).to_be_visible()
    page.get_by_label(protocol.name, exact=True).check()
    indication = page.get_by_role("combobox", name="Indication")
    indication.select_option(label="Treatment-resistant depression")
    page.get_by_label("Responsible psychiatrist").select_option(label="Priya Shah")
    planned = page.get_by_label("Planned sessions")
    planned.focus()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("6")
    page.keyboard.press("Enter")

    expect(page.get_by_role("status").filter(has_text="Course opened.")).to_be_visible()
    course_row = page.get_by_test_id("course")
    expect(course_row).to_contain_text(
        f"{protocol.name} v{protocol.versions.published().latest('version').version}"
    )
    expect(course_row).to_contain_text("Treatment-resistant depression")
    expect(course_row).to_contain_text("Priya Shah")
    expect(course_row).to_contain_text("Assessment pending")
    course = TreatmentCourse.objects.get(patient=patient)
    assert course.responsible_psychiatrist == psychiatrist

    course_row.get_by_role("button", name="New assessment").click()
    expect(
        page.get_by_role("heading", name="Pre-treatment assessment — Maria Okafor")
    ).to_be_visible()
    assessment = Assessment.objects.get(course=course)
    expect(page).to_have_url(
        live_server.url + reverse("protocols:assessment_edit", args=[assessment.pk])
    )

    # History, typed field after field with Tab.
    type_into(page, "Diagnosis", "Major depressive disorder, recurrent, severe")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Psychiatric history", exact=True)).to_be_focused()
    page.keyboard.type("Three adequate antidepressant trials without remission.")
    for question in (
        "Personal history of psychosis",
        "Personal history of mania",
        "Psychosis or mania in a first-degree relative",
    ):
        answer(page, question, "No")
    type_into(page, "Substance use", "None")
    answer(page, "Ketamine / PCP use", "Never")
    type_into(page, "Alcohol use", "2 units a week")
    type_into(page, "Medical history", "Hypothyroidism, treated")
    page.keyboard.press("Tab")
    page.keyboard.type("Levothyroxine 50 micrograms, sertraline 100 mg")
    page.keyboard.press("Tab")
    page.keyboard.type("None known")
    expect(page.get_by_label("Allergies", exact=True)).to_have_value("None known")
    for question in (
        "Benzodiazepines",
        "Non-benzodiazepine sedative hypnotics",
        "Psychostimulants",
        re.compile("^MAOIs$", re.IGNORECASE),  # shown as "Maois" today: see the report
        "Opioids",
    ):
        answer(page, question, "No")
    answer(page, "Pregnancy", "Not pregnant, not breastfeeding")

    # Baseline vitals: one field after the other with Tab; the weight comes from the chart.
    type_into(page, "Systolic BP (mmHg)", "128")
    for value in ("82", "74", "14", "98"):
        page.keyboard.press("Tab")
        page.keyboard.type(value)
    expect(page.get_by_label("SpO2 (%)", exact=True)).to_have_value("98")
    expect(page.get_by_label("Weight (kg)", exact=True)).to_have_value("68.5")

    for item in rules.contraindications:
        kind = "absolute" if item.is_absolute else "relative — note required"
        answer(page, f"{item.label} ({kind})", "No")
    labels = {value: f"{value} {text}" for value, text in instruments.FREQUENCY_ANSWERS}
    for scale, answers in ((instruments.PHQ9, PHQ9), (instruments.GAD7, GAD7)):
        for i, (text, value) in enumerate(zip(scale.items, answers, strict=True), start=1):
            answer(page, f"{i}. {text}", labels[value])
    questions = dict(instruments.CSSRS_QUESTIONS)
    for key in ("q1", "q2", "q6"):
        answer(page, questions[key], "No")
    screenshot("step1-01-assessment-form")

    page.get_by_role("button", name="Save and submit for sign-off").click()
    expect(
        page.get_by_role("status").filter(has_text="Submitted. The responsible psychiatrist")
    ).to_be_visible()
    expect(page.get_by_test_id("assessment-status")).to_have_text("Submitted for sign-off")
    phq9 = (sum(PHQ9), instruments.PHQ9.band_for(sum(PHQ9)))
    gad7 = (sum(GAD7), instruments.GAD7.band_for(sum(GAD7)))
    expect(page.get_by_test_id("phq9")).to_contain_text(f"{phq9[0]} — {phq9[1]}")
    expect(page.get_by_test_id("gad7")).to_contain_text(f"{gad7[0]} — {gad7[1]}")
    assessment.refresh_from_db()
    assert assessment.status == Assessment.Status.SUBMITTED
    assert assessment.phq9_items == PHQ9 and assessment.gad7_items == GAD7
    assert (assessment.sbp, assessment.dbp, assessment.hr, assessment.rr, assessment.spo2) == (
        128,
        82,
        74,
        14,
        98,
    )
    log_out(page, live_server)

    # --- the psychiatrist, in a browser of her own -----------------------------------------------
    context = browser.new_context(**browser_context_args)
    try:
        doctor = context.new_page()

        def shot(name: str) -> None:
            doctor.screenshot(path=str(screenshot_dir / f"{name}.png"), full_page=True)

        log_in(doctor, live_server, psychiatrist)
        nav = doctor.get_by_role("navigation", name="Main navigation")
        expect(nav.get_by_test_id("nav-count-sign-off")).to_have_text(re.compile(r"^1\b"))
        nav.get_by_role("link", name=re.compile("^Sign-off")).click()
        queue_heading = doctor.get_by_role("heading", name="Assessments waiting for sign-off")
        expect(queue_heading).to_be_visible()
        row = doctor.get_by_role("row").filter(has_text="Okafor, Maria")
        expect(row).to_contain_text(f"PHQ-9 {phq9[0]} ({phq9[1]})")
        expect(row).to_contain_text(f"GAD-7 {gad7[0]} ({gad7[1]})")
        expect(row).to_contain_text("by Alex Jones")
        shot("step1-02-signoff-queue")

        row.get_by_role("link", name="Review").click()
        expect(doctor.get_by_role("heading", name="Review and sign: Maria Okafor")).to_be_visible()
        expect(doctor.get_by_text("Signing as")).to_contain_text("Priya Shah")
        doctor.get_by_label("Approve: treatment may start").check()
        doctor.get_by_label("Your password").focus()
        doctor.keyboard.type(TEST_PASSWORD)
        shot("step1-03-sign-page")
        doctor.keyboard.press("Enter")

        expect(
            doctor.get_by_role("status").filter(has_text="Signed. The assessment is locked.")
        ).to_be_visible()
        expect(doctor.get_by_test_id("assessment-status")).to_have_text("Signed: approved")
        signature = Signature.objects.get(meaning=Signature.Meaning.APPROVED)
        local = signature.signed_at.astimezone(ZoneInfo(site.time_zone))
        shown = f"{local.day} {local:%b %Y %H:%M:%S} {local.tzname()} ({local:%z})"
        manifestation = doctor.get_by_test_id("signature")
        expect(manifestation).to_contain_text("Approved by Priya Shah")
        expect(manifestation).to_contain_text(shown)
        expect(doctor.get_by_test_id("signature-invalid")).to_have_count(0)
        expect(nav.get_by_test_id("nav-count-sign-off")).to_have_count(0)
        shot("step1-04-signed-assessment")

        doctor.get_by_role("link", name="Okafor, Maria").click()
        expect(doctor.get_by_role("heading", name="Okafor, Maria", exact=True)).to_be_visible()
        chart_step1 = doctor.get_by_role("region", name=re.compile("Step 1"))
        expect(chart_step1.get_by_role("row").filter(has_text="Signed: approved")).to_have_count(1)
        expect(chart_step1.get_by_test_id("course")).to_contain_text("Active")
        canvas = doctor.locator("#instrument-trend")
        expect(canvas).to_be_visible()
        assert doctor.evaluate("typeof window.Chart") == "function"
        assert canvas.evaluate("c => c.width") > 0
        assert canvas.evaluate("c => c.height") > 0
        assert canvas.evaluate("c => Chart.getChart(c) !== undefined")
        doctor.wait_for_function(
            "Chart.getChart(document.getElementById('instrument-trend')).data.datasets.length === 2"
        )
        shot("step1-05-chart")
    finally:
        context.close()

    assessment.refresh_from_db()
    assert assessment.status == Assessment.Status.APPROVED
    assert assessment.is_locked
    assert signature.signer == psychiatrist
    course.refresh_from_db()
    assert course.status == TreatmentCourse.Status.ACTIVE
