"""Clinical rules through the browser: who may sign a discharge, and a pre-dose critical reading
that closes the start gate (SPEC §M9, §U, §M5, §G3).

The worlds are built through the services with the `Clinic` builder of the clinical-rule tests.
A session at the end of its minimum observation needs about 110 minutes of history: it is built
before the browser starts, travelling in time only while no request is served; everything the
browser does happens in real time.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from clinic.models import Signature
from monitoring import services
from monitoring.models import Alert, TreatmentSession
from monitoring.permissions import may_sign_discharge
from monitoring.services import GATE_CLOSED
from tests.clinical.conftest import NORMAL, Clinic
from tests.e2e.test_nurse_journey import log_in
from tests.factories import TEST_PASSWORD, PatientFactory

pytestmark = pytest.mark.e2e

# Minutes after the dose start at which the IV schedule's checks fall (SPEC §D, §M6): infusion
# vitals every 10 min until the 40-min infusion ends, recovery vitals every 15 min after it,
# CADSS at the start and at 40 min.
IV_VITALS_AT = (10, 20, 30, 40, 55, 70, 85, 100)
IV_CADSS_AT = (0, 40)
INFUSION_ENDS_AT = 40
LAST_SET_AT = 103  # the before-discharge CADSS and vitals, after the 60-min observation


@pytest.fixture
def patient(site, nurse):
    return PatientFactory(
        home_site=site,
        created_by=nurse,
        mrn="KT-2025/0107",
        given_name="Samuel",
        family_name="Adeyemi",
        weight_kg=70,
    )


@pytest.fixture
def clinic(site, patient, nurse, psychiatrist, anesthesiologist) -> Clinic:
    return Clinic(
        site=site,
        patient=patient,
        nurse=nurse,
        psychiatrist=psychiatrist,
        anesthesiologist=anesthesiologist,
        password=TEST_PASSWORD,
    )


def allow_nurse_discharge(rules: dict) -> None:
    rules["discharge"]["nurse_may_discharge"] = True


def ready_to_discharge(clinic: Clinic, *, nurse_may_discharge: bool) -> TreatmentSession:
    """An IV-ketamine session with every required check recorded, whose minimum observation
    ended a few minutes ago; the last readings (vitals, CADSS) are two minutes old."""
    dose_at = timezone.now() - timedelta(minutes=LAST_SET_AT + 2)
    with time_machine.travel(dose_at - timedelta(minutes=5), tick=False):
        if nurse_may_discharge:
            clinic.publish("iv-ketamine", allow_nurse_discharge)
        session = clinic.checked_in(clinic.course())
        clinic.vitals(session, **NORMAL)
    with time_machine.travel(dose_at, tick=False):
        session = clinic.dose(session)
    start = session.dose_started_at
    for minute in sorted({*IV_VITALS_AT, *IV_CADSS_AT, LAST_SET_AT}):
        with time_machine.travel(start + timedelta(minutes=minute), tick=False):
            if minute in IV_VITALS_AT or minute == LAST_SET_AT:
                clinic.vitals(session, **NORMAL)
            if minute in IV_CADSS_AT or minute == LAST_SET_AT:
                services.observation_record(
                    session=session, acting_user=clinic.nurse, kind="cadss", cadss_total=2
                )
            if minute == INFUSION_ENDS_AT:
                services.dose_complete(
                    session=session, acting_user=clinic.nurse, ended_at=timezone.now()
                )
    session = clinic.fresh(session)
    assert session.status == TreatmentSession.Status.MONITORING
    assert session.rules.discharge["nurse_may_discharge"] is nurse_may_discharge
    return session


def open_session(page: Page, live_server, session: TreatmentSession, status: str) -> str:
    url = live_server.url + reverse("monitoring:session", args=[session.pk])
    page.goto(url)
    expect(page.get_by_test_id("session-status")).to_have_text(status)
    return url


# --- SPEC §M9 / §U: who signs the discharge follows the protocol's `nurse may discharge` ---------


def test_a_site_whose_protocol_allows_nurse_discharge_a_nurse_discharges(
    page: Page, live_server, clinic, nurse, screenshot
):
    """SPEC §U: a nurse may not "discharge alone (unless the protocol allows nurse discharge)";
    §M9: the discharge is "Signed by the discharging clinician (who may sign is decided in one
    place and follows the protocol's `nurse may discharge` setting everywhere)"; §M9 criteria:
    modified Aldrete ≥ 9, MOAA/S back to 5, escort present, the no-driving instruction given."""
    session = ready_to_discharge(clinic, nurse_may_discharge=True)

    log_in(page, live_server, nurse)
    session_url = open_session(page, live_server, session, "Monitoring")
    close_gate = page.get_by_test_id("gate")
    expect(close_gate.locator("[data-met]")).to_have_count(3)
    expect(close_gate.locator('[data-met="no"]')).to_have_count(0)
    page.get_by_role("link", name="Discharge", exact=True).click()

    expect(page.get_by_role("heading", name="Discharge", exact=True)).to_be_visible()
    expect(page.get_by_test_id("gate").locator('[data-met="no"]')).to_have_count(0)
    for item in ("activity", "respiration", "circulation", "consciousness", "spo2"):
        page.locator(f'input[name="aldrete_{item}"][value="2"]').check()
    page.get_by_label("MOAA/S now").select_option("5")
    page.get_by_label("Escort present").check()
    page.get_by_label("Told: no driving until the next day after sleep").check()
    page.get_by_label("Your password").fill(TEST_PASSWORD)
    screenshot("rules-01-nurse-discharge-form")
    page.get_by_role("button", name="Sign discharge").click()

    expect(page).to_have_url(session_url)
    expect(page.get_by_role("status").filter(has_text="Discharged and signed")).to_be_visible()
    expect(page.get_by_test_id("session-status")).to_have_text("Discharged")
    expect(page.get_by_test_id("signature")).to_contain_text(f"Discharged by {nurse.printed_name}")
    expect(page.get_by_role("link", name="Discharge", exact=True)).to_have_count(0)
    expect(page.locator("#vitals-form")).to_have_count(0)  # locked
    screenshot("rules-02-nurse-discharged")

    session = clinic.fresh(session)
    assert session.status == TreatmentSession.Status.DISCHARGED
    assert session.is_locked
    assert session.discharge.discharged_by == nurse
    assert session.discharge.disagreements == []
    signature = Signature.objects.get(object_id=session.pk, meaning=Signature.Meaning.DISCHARGED)
    assert signature.signer == nurse


def test_with_the_default_protocol_the_nurse_has_no_discharge_button_and_is_refused(
    page: Page, live_server, clinic, nurse, anesthesiologist
):
    """SPEC §U: the nurse may NOT "discharge alone (unless the protocol allows nurse
    discharge)"; the shipped IV protocol does not (SPEC §D), so the session page offers no
    Discharge button and the discharge page answers 403 — though the session is ready."""
    session = ready_to_discharge(clinic, nurse_may_discharge=False)
    assert may_sign_discharge(anesthesiologist, session)  # ready: only the signer is wrong

    log_in(page, live_server, nurse)
    open_session(page, live_server, session, "Monitoring")
    expect(page.get_by_test_id("gate").locator('[data-met="no"]')).to_have_count(0)
    expect(page.get_by_role("link", name="Report")).to_be_visible()  # the button row is there
    expect(page.get_by_role("link", name="Discharge", exact=True)).to_have_count(0)

    response = page.goto(live_server.url + reverse("monitoring:discharge", args=[session.pk]))
    assert response is not None
    assert response.status == 403
    assert clinic.fresh(session).status == TreatmentSession.Status.MONITORING


# --- SPEC §M5 / §G3: a pre-dose critical reading blocks the start gate until acknowledged ---------


def type_vitals(page: Page, values: dict) -> None:
    """SBP, DBP, HR, RR, SpO2, (temperature left empty), MOAA/S, then Enter — keys only."""
    for name in ("sbp", "dbp", "hr", "rr", "spo2"):
        page.keyboard.type(str(values[name]))
        page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # temperature: not taken
    page.keyboard.type(str(values["moaas"]))
    page.keyboard.press("Enter")


def condition(page: Page, code: str):
    return page.get_by_test_id("gate").locator(f'[data-condition="{code}"]')


def test_a_predose_critical_spo2_shows_the_alert_and_blocks_the_gate(
    page: Page,
    browser: Browser,
    browser_context_args: dict,
    live_server,
    clinic,
    nurse,
    psychiatrist,
    anesthesiologist,
    screenshot,
):
    """SPEC §M5: "Alerts are evaluated on **every** saved reading, pre-dose readings included"
    (critical: SpO2 < 90), and critical ones "must be acknowledged (who, when, action taken)";
    §G3: a session cannot start dosing unless "no unacknowledged critical alert", "each failing
    one shown by name", and "a complete pre-dose vitals set ... within the last 30 minutes"."""
    session = clinic.checked_in(clinic.course())
    lot = clinic.lot("ketamine")
    critical = next(
        rule
        for rule in session.rules.alerts
        if rule.level == "critical" and rule.field == "spo2" and rule.op == "<"
    )
    low = {**NORMAL, "spo2": 88}
    assert low["spo2"] < critical.value

    # --- the nurse types a complete pre-dose set with SpO2 88, by keyboard --------------------
    log_in(page, live_server, nurse)
    session_url = open_session(page, live_server, session, "Checked in")
    expect(condition(page, "predose-vitals")).to_have_attribute("data-met", "no")
    expect(condition(page, "critical-alerts")).to_have_attribute("data-met", "yes")
    expect(page.locator("#vitals-form [name=sbp]")).to_be_focused()
    type_vitals(page, low)

    rows = page.get_by_test_id("flowsheet").get_by_test_id("reading")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("pre-dose")
    expect(page.get_by_test_id("saved")).to_be_visible()
    open_alert = page.get_by_test_id("alerts").locator(
        '[data-level="critical"][data-acknowledged="no"]'
    )
    expect(open_alert).to_contain_text(critical.message)
    expect(page.get_by_test_id("alerts").get_by_role("link", name="Acknowledge")).to_have_count(0)
    alert = Alert.objects.get(session=session, level=Alert.Level.CRITICAL)
    assert (alert.message, alert.reading.is_predose) == (critical.message, True)

    # The start gate refreshes with the readings, without a reload.
    gate_alerts = condition(page, "critical-alerts")
    expect(gate_alerts).to_have_attribute("data-met", "no")
    expect(gate_alerts).to_contain_text("No unacknowledged critical alert — not met")
    expect(gate_alerts).to_contain_text(critical.message)
    screenshot("rules-03-predose-critical-alert")

    # --- the dose is refused while the alert is open -----------------------------------------
    page.get_by_role("link", name="Record dose").click()
    expect(page.get_by_role("heading", name="Record the dose")).to_be_visible()
    expect(condition(page, "critical-alerts")).to_have_attribute("data-met", "no")
    page.get_by_label("Lot").select_option(label=str(lot))
    page.get_by_label("Dose (mg)").fill("35")
    page.get_by_label("Volume (mL)").fill("3.5")
    page.get_by_role("combobox", name="Prescriber").select_option(label=psychiatrist.printed_name)
    page.get_by_role("button", name="Record dose").click()
    refused = page.get_by_test_id("form-error")
    expect(refused).to_contain_text(GATE_CLOSED.split("{")[0].strip())
    expect(refused).to_contain_text("No unacknowledged critical alert")
    screenshot("rules-04-dose-refused")
    session = clinic.fresh(session)
    assert session.status == TreatmentSession.Status.CHECKED_IN
    assert not session.doses.exists()

    # --- the anesthesiologist acknowledges it, with the action taken -------------------------
    context = browser.new_context(**browser_context_args)
    try:
        doctor = context.new_page()
        log_in(doctor, live_server, anesthesiologist)
        doctor.goto(session_url)
        doctor.get_by_test_id("alerts").get_by_role("link", name="Acknowledge").click()
        expect(
            doctor.get_by_role("heading", name=f"Acknowledge: {critical.message}")
        ).to_be_visible()
        doctor.get_by_label("Action taken").fill("Probe re-sited, oxygen 2 L; SpO2 97 % at 3 min.")
        doctor.get_by_role("button", name="Acknowledge").click()
        expect(doctor).to_have_url(session_url)
        acknowledged = doctor.get_by_test_id("alerts").locator('[data-acknowledged="yes"]')
        expect(acknowledged).to_contain_text(f"by {anesthesiologist.printed_name}")
        expect(acknowledged).to_contain_text("Probe re-sited")
    finally:
        context.close()
    alert.refresh_from_db()
    assert alert.acknowledged_by == anesthesiologist

    # --- the nurse records a normal pre-dose set; the gate opens and the dose is taken --------
    page.goto(session_url)
    expect(condition(page, "critical-alerts")).to_have_attribute("data-met", "yes")
    expect(page.locator("#vitals-form [name=sbp]")).to_be_focused()
    type_vitals(page, NORMAL)
    expect(rows).to_have_count(2)
    page.reload()
    expect(condition(page, "critical-alerts")).to_have_attribute("data-met", "yes")
    expect(condition(page, "critical-alerts")).to_contain_text(
        "No unacknowledged critical alert — met"
    )
    expect(condition(page, "predose-vitals")).to_have_attribute("data-met", "yes")
    expect(page.get_by_test_id("gate").locator('[data-met="no"]')).to_have_count(0)
    screenshot("rules-05-gate-open")

    page.get_by_role("link", name="Record dose").click()
    page.get_by_label("Lot").select_option(label=str(lot))
    page.get_by_label("Dose (mg)").fill("35")
    page.get_by_label("Volume (mL)").fill("3.5")
    page.get_by_role("combobox", name="Prescriber").select_option(label=psychiatrist.printed_name)
    page.get_by_role("button", name="Record dose").click()
    expect(page).to_have_url(session_url)
    expect(page.get_by_test_id("session-status")).to_have_text("Dosing")
    assert clinic.fresh(session).status == TreatmentSession.Status.DOSING


# --- The gate refreshes with the live part of the page ------------------------------------------


def test_the_start_gate_shows_a_new_predose_critical_alert_without_a_reload(
    page: Page, live_server, clinic, nurse
):
    """SPEC §G3: "each failing one shown by name" — on the screen where the nurse has just
    saved the reading that fails it, next to the alert it raised (§M5)."""
    session = clinic.checked_in(clinic.course())
    log_in(page, live_server, nurse)
    open_session(page, live_server, session, "Checked in")
    expect(page.locator("#vitals-form [name=sbp]")).to_be_focused()
    type_vitals(page, {**NORMAL, "spo2": 88})
    expect(page.get_by_test_id("alerts").locator('[data-level="critical"]')).to_have_count(1)

    expect(condition(page, "predose-vitals")).to_have_attribute("data-met", "yes", timeout=3000)
    expect(condition(page, "critical-alerts")).to_have_attribute("data-met", "no", timeout=3000)
