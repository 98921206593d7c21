"""Discharge (SPEC §M9, §U, §G4): criteria agree with the record, and who may sign is one rule.

Sources: SPEC §M9 ("modified Aldrete score ≥ 9 (activity, respiration, circulation — BP within
20 % of baseline, consciousness, SpO2 > 92 % on room air; each 0–2); MOAA/S back to 5";
"Criteria entered at discharge must agree with the latest valid readings and observations, or
the discharge needs a written reason"; "who may sign is decided in one place and follows the
protocol's `nurse may discharge` setting everywhere"), Aldrete & Kroulik 1970 / modified
Aldrete 1995 (SpO2 > 92 % on room air = 2; circulation ±20 % = 2, ±20–49 % = 1).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from monitoring import services
from monitoring.models import TreatmentSession
from monitoring.permissions import may_sign_discharge
from tests.clinical.conftest import NORMAL

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 6, 10, 9, 0, tzinfo=UTC)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def ready_to_discharge(clinic, last=None, slug="iv-ketamine"):
    """An IV session with every check recorded, at the end of its minimum observation; the
    last reading before discharge is `last` (default normal)."""
    with time_machine.travel(T0, tick=False):
        session = clinic.checked_in(clinic.course(slug))
        clinic.vitals(session, **NORMAL)
    with time_machine.travel(T0 + minutes(5), tick=False):
        session = clinic.dose(session)
    start = session.dose_started_at
    for due in (0, 10, 20, 30, 40, 55, 70, 85, 100):
        with time_machine.travel(start + minutes(due), tick=False):
            if due:
                clinic.vitals(session, **NORMAL)
            if due in (0, 40):
                services.observation_record(
                    session=session, acting_user=clinic.nurse, kind="cadss", cadss_total=3
                )
            if due == 40:
                services.dose_complete(
                    session=session, acting_user=clinic.nurse, ended_at=start + minutes(40)
                )
    at = start + minutes(103)
    with time_machine.travel(at, tick=False):
        services.observation_record(
            session=session, acting_user=clinic.nurse, kind="cadss", cadss_total=1
        )
        clinic.vitals(session, **{**NORMAL, **(last or {})})
    return clinic.fresh(session), at


CRITERIA = {
    "aldrete_activity": 2,
    "aldrete_respiration": 2,
    "aldrete_circulation": 2,
    "aldrete_consciousness": 2,
    "aldrete_spo2": 2,
    "moaas": 5,
    "escort_present": True,
    "no_driving_instruction_given": True,
    "prescriber_decision": "",
    "ready_to_leave_minutes": None,
    "notes": "",
}


def sign(clinic, session, at, signer=None, **overrides):
    with time_machine.travel(at + minutes(1), tick=False):
        return services.session_discharge(
            session=session,
            signer=signer or clinic.anesthesiologist,
            password=clinic.password,
            **{**CRITERIA, **overrides},
        )


# --- Agreement with the record -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spo2", "supported"), [(93, 2), (92, 1), (90, 1), (89, 0)], ids=["93", "92", "90", "89"]
)
def test_m9_aldrete_spo2_must_agree_with_the_latest_spo2(clinic, spo2, supported):
    """SPEC §M9: SpO2 item 2 only for SpO2 > 92 % (92 is not above 92)."""
    session, at = ready_to_discharge(clinic, last={"spo2": spo2})
    for alert in session.alerts.filter(level="critical"):
        services.alert_acknowledge(
            alert=alert, acting_user=clinic.anesthesiologist, action_taken="Oxygen given"
        )
    if supported == 2:
        assert sign(clinic, session, at).status == TreatmentSession.Status.DISCHARGED
        return
    with pytest.raises(ValidationError) as refused:
        sign(clinic, session, at)
    assert "disagreement_reason" in refused.value.message_dict
    assert f"SpO2 {spo2} %" in " ".join(refused.value.message_dict["disagreement_reason"])
    # With the item entered as the record supports it, no reason is needed (total ≥ 9 when 1).
    if supported == 1:
        done = sign(clinic, session, at, aldrete_spo2=1)
        assert done.discharge.disagreements == []


def test_m9_a_written_reason_allows_a_disagreeing_entry_and_is_stored(clinic):
    session, at = ready_to_discharge(clinic, last={"spo2": 91})
    done = sign(clinic, session, at, disagreement_reason="Probe on cold finger; 96 % on re-check")
    assert done.discharge.disagreement_reason.startswith("Probe on cold finger")
    assert done.discharge.disagreements[0]["item"] == "aldrete_spo2"
    assert done.discharge.disagreements[0]["supported"] == 1


@pytest.mark.parametrize(("moaas", "consciousness"), [(4, 1), (3, 1), (2, 0)])
def test_m9_moaas_and_consciousness_must_agree_with_the_latest_moaas(clinic, moaas, consciousness):
    """SPEC §M9: MOAA/S entered 5 while the last recorded MOAA/S is lower needs a reason."""
    session, at = ready_to_discharge(clinic, last={"moaas": moaas})
    with pytest.raises(ValidationError) as refused:
        sign(clinic, session, at)
    text = " ".join(refused.value.message_dict["disagreement_reason"])
    assert "MOAA/S" in text
    assert f"MOAA/S {moaas}" in text


@pytest.mark.parametrize(
    ("sbp", "agrees"),
    [(150, True), (151, False), (100, True), (99, False)],
    ids=["+20%", "+20.8%", "-20%", "-20.8%"],
)
def test_m9_circulation_2_needs_bp_within_20_percent_of_baseline(clinic, sbp, agrees):
    """SPEC §M9: "circulation — BP within 20 % of baseline" (baseline SBP 125)."""
    session, at = ready_to_discharge(clinic, last={"sbp": sbp, "dbp": 80})
    if agrees:
        assert sign(clinic, session, at).status == TreatmentSession.Status.DISCHARGED
    else:
        with pytest.raises(ValidationError, match="circulation"):
            sign(clinic, session, at)


def test_m9_refused_discharge_saves_nothing(clinic):
    session, at = ready_to_discharge(clinic, last={"spo2": 90})
    with pytest.raises(ValidationError):
        sign(clinic, session, at)
    session = clinic.fresh(session)
    assert session.status == TreatmentSession.Status.MONITORING
    assert not hasattr(session, "discharge")


# --- Who may sign: one rule for service, view and template ---------------------------------------


def allow_nurse_discharge(rules):
    rules["discharge"]["nurse_may_discharge"] = True


@pytest.mark.parametrize("nurse_may", [False, True], ids=["default", "nurse-may-discharge"])
def test_m9_who_may_sign_a_discharge_is_one_rule_for_service_view_and_template(
    clinic, client, nurse_may
):
    """SPEC §M9/§U: nurses sign only when the protocol allows nurse discharge — the service,
    the discharge page and the session page's button agree for every role."""
    if nurse_may:
        clinic.publish("iv-ketamine", allow_nurse_discharge)
    session, at = ready_to_discharge(clinic)
    url = reverse("monitoring:discharge", kwargs={"session_id": session.pk})
    page = reverse("monitoring:session", kwargs={"session_id": session.pk})
    for user, expected in [
        (clinic.nurse, nurse_may),
        (clinic.anesthesiologist, True),
        (clinic.psychiatrist, True),
    ]:
        assert may_sign_discharge(user, session) is expected
        client.force_login(user)
        with time_machine.travel(at + minutes(1), tick=False):
            assert client.get(url).status_code == (200 if expected else 403)
            shows_button = url in client.get(page).content.decode()
        assert shows_button is expected

    if nurse_may:
        done = sign(clinic, session, at, signer=clinic.nurse)
        assert done.discharge.discharged_by == clinic.nurse
    else:
        with pytest.raises(PermissionDenied):
            sign(clinic, session, at, signer=clinic.nurse)


def test_m9_gp_and_administrator_never_sign_a_discharge(clinic, gp, administrator):
    clinic.publish("iv-ketamine", allow_nurse_discharge)
    session, _ = ready_to_discharge(clinic)
    assert not may_sign_discharge(gp, session)
    assert not may_sign_discharge(administrator, session)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("aldrete_spo2", 3),
        ("aldrete_spo2", -1),
        ("aldrete_spo2", 1.5),
        ("aldrete_spo2", "two"),
        ("aldrete_spo2", None),
        ("moaas", 6),
        ("escort_present", "yes"),
    ],
)
def test_n5_m9_bad_criteria_given_to_the_service_are_field_errors(clinic, field, value):
    """SPEC §N5: the service judges the criteria as the form does; nothing is saved."""
    session, at = ready_to_discharge(clinic)
    with pytest.raises(ValidationError) as refused:
        sign(clinic, session, at, **{field: value})
    assert field in refused.value.message_dict
    assert clinic.fresh(session).status == TreatmentSession.Status.MONITORING


def test_n5_m9_a_missing_criterion_is_a_field_error(clinic):
    session, at = ready_to_discharge(clinic)
    values = {k: v for k, v in CRITERIA.items() if k != "moaas"}
    with (
        time_machine.travel(at + minutes(1), tick=False),
        pytest.raises(ValidationError) as refused,
    ):
        services.session_discharge(
            session=session, signer=clinic.anesthesiologist, password=clinic.password, **values
        )
    assert "moaas" in refused.value.message_dict
