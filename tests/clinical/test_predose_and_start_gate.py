"""Pre-dose readings and the start gate (SPEC §G3, §M5, §D), each rule at its edge.

Sources: SPEC §G3 ("a complete pre-dose vitals set (BP systolic and diastolic, HR, SpO2)
measured within the last 30 minutes; no unacknowledged critical alert; no open high suicide
risk (the most recently administered C-SSRS counts)"), §M5 ("Alerts are evaluated on every
saved reading, pre-dose readings included"; "The decision is bound to the reading it was made
on"), the Spravato label / REMS ("assess blood pressure prior to dosing").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from clinic.models import Notification
from monitoring import gates, services
from monitoring.models import Alert, TreatmentSession
from protocols import services as protocol_services
from tests.clinical.conftest import NORMAL
from tests.protocols.conftest import complete_fields

pytestmark = pytest.mark.django_db


def critical_alerts(session) -> list[Alert]:
    return list(session.alerts.filter(level=Alert.Level.CRITICAL))


# --- §M5: alerts on every saved reading, pre-dose included -------------------------------------


@pytest.mark.parametrize(
    ("spo2", "critical"),
    [(90, False), (89, True), (91, False)],
    ids=["at-90-not-critical", "just-below-89-critical", "above-91-not-critical"],
)
def test_m5_predose_spo2_below_90_raises_a_critical_alert_and_notifies(clinic, spo2, critical):
    """SPEC §M5: critical SpO2 < 90, evaluated on pre-dose readings too."""
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, **{**NORMAL, "spo2": spo2})

    assert bool(critical_alerts(session)) is critical
    notified = Notification.objects.filter(
        recipient=clinic.anesthesiologist, kind=Notification.Kind.CRITICAL_ALERT
    ).exists()
    assert notified is critical
    gate = clinic.conditions(session)
    assert gate["critical-alerts"].met is not critical


@pytest.mark.parametrize(
    ("sbp", "critical"), [(199, False), (200, True), (201, True)], ids=["199", "200", "201"]
)
def test_m5_predose_sbp_200_or_more_is_critical_and_blocks_the_start_gate(clinic, sbp, critical):
    """SPEC §M5: critical SBP ≥ 200, on a pre-dose reading as during treatment (§G3 gate)."""
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, **{**NORMAL, "sbp": sbp, "dbp": 95})
    assert bool(critical_alerts(session)) is critical
    assert clinic.conditions(session)["critical-alerts"].met is not critical


def test_g3_a_predose_critical_alert_blocks_dosing_until_acknowledged(clinic):
    """SPEC §G3: "no unacknowledged critical alert" — the dose is refused, then allowed once
    the anesthesiologist acknowledges it and a new normal set is taken."""
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, **{**NORMAL, "spo2": 86})
    with pytest.raises(ValidationError, match="No unacknowledged critical alert"):
        clinic.dose(session)

    alert = critical_alerts(session)[0]
    services.alert_acknowledge(
        alert=alert, acting_user=clinic.anesthesiologist, action_taken="Oxygen, repositioned"
    )
    clinic.vitals(session, **NORMAL)
    assert clinic.dose(session).status == TreatmentSession.Status.DOSING


def test_m5_the_prescribers_decision_on_a_critical_predose_reading_acknowledges_it(clinic):
    """SPEC §M5 / issue 10: a pre-dose critical alert blocks the gate "until acknowledged or
    the prescriber decides"."""
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, **{**NORMAL, "spo2": 88})
    services.predose_decide(
        session=session, acting_user=clinic.psychiatrist, decision="defer", reason="Hypoxic"
    )
    alert = critical_alerts(session)[0]
    alert.refresh_from_db()
    assert alert.acknowledged_by == clinic.psychiatrist
    assert "defer" in alert.action_taken
    assert clinic.conditions(session)["critical-alerts"].met


# --- §G3: a complete pre-dose set, at most 30 minutes old ----------------------------------------


@pytest.mark.parametrize(
    "partial",
    [{"spo2": 98}, {"temperature_c": "36.8"}, {"sbp": 120, "dbp": 80, "hr": 70}],
    ids=["spo2-only", "temperature-only", "no-spo2"],
)
def test_g3_an_incomplete_reading_does_not_satisfy_the_predose_condition(clinic, partial):
    """SPEC §G3: "a complete pre-dose vitals set (BP systolic and diastolic, HR, SpO2)"."""
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, **partial)
    assert not clinic.conditions(session)["predose-vitals"].met
    with pytest.raises(ValidationError):
        clinic.dose(session)


def test_g3_a_later_partial_reading_does_not_refresh_an_old_complete_set(clinic):
    """SPEC §G3: the 30 minutes run from the complete set, not from a later SpO2-only one."""
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        session = clinic.checked_in(clinic.course())
        clinic.vitals(session, **NORMAL)
    with time_machine.travel(start + timedelta(minutes=25), tick=False):
        clinic.vitals(session, spo2=97)
    with time_machine.travel(start + timedelta(minutes=31), tick=False):
        assert not clinic.conditions(session)["predose-vitals"].met


@pytest.mark.parametrize(
    ("age", "met"),
    [
        (timedelta(minutes=30) - timedelta(seconds=1), True),
        (timedelta(minutes=30), True),
        (timedelta(minutes=30, seconds=1), False),
    ],
    ids=["29m59s", "exactly-30m", "30m01s"],
)
def test_g3_predose_set_counts_up_to_exactly_30_minutes(clinic, age, met):
    """SPEC §G3: "measured within the last 30 minutes" (inclusive at 30)."""
    session = clinic.checked_in(clinic.course())
    reading = clinic.vitals(session, **NORMAL)
    assert clinic.conditions(session, at=reading.measured_at + age)["predose-vitals"].met is met


def test_g3_a_temperature_only_reading_does_not_hide_an_earlier_raised_bp(clinic):
    """SPEC §M5: the pre-dose BP decision follows the latest reading holding a BP."""
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, **{**NORMAL, "sbp": 150, "dbp": 85})
    clinic.vitals(session, temperature_c="36.9")
    clinic.vitals(session, spo2=99)
    gate = clinic.conditions(session)
    assert gate["predose-decision"].met is False
    assert gate["predose-vitals"].met is True


def test_m5_baseline_is_the_latest_predose_value_of_each_field_not_an_spo2_only_reading(clinic):
    """SPEC §M5: "a SpO2-only reading is never a BP baseline" — the rise over baseline is
    computed from the latest valid pre-dose reading that holds a BP."""
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, **{**NORMAL, "sbp": 110, "dbp": 70})
    clinic.vitals(session, spo2=98)  # the latest pre-dose reading, without a BP
    session = clinic.dose(session)
    # 110 + 41 = 151: a rise of more than 40 over the BP baseline.
    reading = clinic.vitals(session, **{**NORMAL, "sbp": 151, "dbp": 75})
    messages = [a.message for a in reading.alerts.all()]
    assert any("SBP more than 40" in m for m in messages)
    at_edge = clinic.vitals(session, **{**NORMAL, "sbp": 150, "dbp": 75})
    assert not any("SBP more than 40" in a.message for a in at_edge.alerts.all())


def test_m5_a_baseline_marked_in_error_is_not_the_baseline(clinic):
    """SPEC §M5/§M8: the baseline is the latest *valid* pre-dose reading."""
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, **{**NORMAL, "sbp": 150, "dbp": 80})
    wrong = clinic.vitals(session, **{**NORMAL, "sbp": 100, "dbp": 60})
    services.vitals_mark_error(reading=wrong, acting_user=clinic.nurse, reason="Wrong patient")
    assert gates.predose_baseline(clinic.fresh(session)).sbp == 150


# --- §M5: the prescriber's decision is bound to its reading -------------------------------------


def decide(clinic, session, decision="proceed"):
    return services.predose_decide(
        session=session, acting_user=clinic.psychiatrist, decision=decision, reason="Reviewed"
    )


@pytest.mark.parametrize(
    ("sbp", "dbp", "needs"),
    [(140, 90, False), (141, 90, True), (140, 91, True)],
    ids=["140/90-no-decision", "141-decision", "dbp-91-decision"],
)
def test_m5_predose_bp_above_140_90_needs_the_prescribers_decision(clinic, sbp, dbp, needs):
    """SPEC §M5: "pre-dose: SBP > 140 or DBP > 90 ⇒ the prescriber must record proceed or
    defer"."""
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, **{**NORMAL, "sbp": sbp, "dbp": dbp})
    gate = clinic.conditions(session)
    assert ("predose-decision" in gate and not gate["predose-decision"].met) is needs


def test_m5_a_later_raised_reading_needs_a_new_decision(clinic):
    """SPEC §M5: "a later raised pre-dose reading needs a new decision"; a decision is never
    re-used for a higher BP."""
    session = clinic.checked_in(clinic.course())
    first = clinic.vitals(session, **{**NORMAL, "sbp": 150, "dbp": 85})
    decide(clinic, session)
    session = clinic.fresh(session)
    assert session.predose_decision_reading_id == first.pk
    assert clinic.conditions(session)["predose-decision"].met

    clinic.vitals(session, **{**NORMAL, "sbp": 170, "dbp": 95})
    gate = clinic.conditions(session)
    assert not gate["predose-decision"].met
    assert "new decision" in gate["predose-decision"].detail
    with pytest.raises(ValidationError, match="Prescriber's decision"):
        clinic.dose(session)

    decide(clinic, session)
    assert clinic.conditions(session)["predose-decision"].met


def test_m5_a_deferral_does_not_open_the_gate_and_a_later_normal_set_needs_no_decision(clinic):
    """SPEC §M5: defer keeps the gate shut; a later normal complete set needs no decision."""
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, **{**NORMAL, "sbp": 160, "dbp": 85})
    decide(clinic, session, "defer")
    assert not clinic.conditions(session)["predose-decision"].met
    clinic.vitals(session, **NORMAL)
    assert "predose-decision" not in clinic.conditions(session)
    assert clinic.dose(session).status == TreatmentSession.Status.DOSING


def test_m5_no_decision_can_be_recorded_without_a_raised_reading(clinic):
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, **NORMAL)
    with pytest.raises(ValidationError, match="needs a decision"):
        decide(clinic, session)


# --- §D / label: esketamine BP before the first device ------------------------------------------


def test_d_esketamine_bp_before_dose_is_met_only_by_a_reading_before_the_first_device(clinic):
    """SPEC §M6/§D: "'Before dose' checks are met only by readings measured before the dose
    started" — a BP taken after the first device never meets "Pre-dose BP"."""
    session = clinic.checked_in(clinic.course("esketamine-rems"))
    clinic.vitals(session, **NORMAL)
    session = clinic.dose(session)
    check = session.checks.get(code="predose_bp")
    assert check.satisfied_at is not None
    assert check.satisfied_at < session.dose_started_at


def test_d_esketamine_predose_bp_check_stays_open_when_only_a_later_bp_exists(clinic):
    """SPEC §M6: a reading at or after the first device does not meet the before-dose check."""
    session = clinic.checked_in(clinic.course("esketamine-rems"))
    first = clinic.vitals(session, **NORMAL)
    session = clinic.dose(session)
    services.vitals_mark_error(reading=first, acting_user=clinic.nurse, reason="Wrong arm")
    clinic.vitals(session, **NORMAL)  # after the first device
    check = session.checks.get(code="predose_bp")
    assert check.satisfied_at is None


def test_d_esketamine_cannot_be_dosed_without_a_predose_bp(clinic):
    """Spravato label: BP is assessed before dosing; no BP, no dose."""
    session = clinic.checked_in(clinic.course("esketamine-rems"))
    clinic.vitals(session, hr=70, spo2=98)
    with pytest.raises(ValidationError):
        clinic.dose(session)
    assert clinic.fresh(session).status == TreatmentSession.Status.CHECKED_IN


# --- §G3: the most recently administered C-SSRS counts --------------------------------------------


HIGH = {"q1": True, "q2": True, "q3": True, "q4": True, "q5": False, "q6": False}
LOW = {"q1": True, "q2": False, "q3": None, "q4": None, "q5": None, "q6": False}


def test_g3_the_latest_cssrs_is_the_one_most_recently_answered_not_created(clinic):
    """SPEC §G3: "the most recently *administered* C-SSRS counts" — a draft created first but
    answered last wins over a screen answered in between."""
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        course = clinic.course()  # its approved assessment: low risk, answered now
    with time_machine.travel(start + timedelta(hours=1), tick=False):
        later = protocol_services.assessment_create(course=course, acting_user=clinic.nurse)
    with time_machine.travel(start + timedelta(hours=3), tick=False):
        protocol_services.assessment_update(
            assessment=later,
            acting_user=clinic.nurse,
            **complete_fields(course, cssrs_answers={**HIGH, "q6_recent": None}),
        )
    with time_machine.travel(start + timedelta(hours=4), tick=False):
        screen = gates.latest_cssrs(clinic.patient, at=timezone.now())
        assert screen[1] == "high"
        assert screen[0] == start + timedelta(hours=3)
        session = clinic.checked_in(course)
        assert not clinic.conditions(session)["suicide-risk"].met


DST_CHANGES = [
    pytest.param(datetime(2026, 3, 29, 1, 0, tzinfo=UTC), id="london-spring"),
    pytest.param(datetime(2026, 10, 25, 1, 0, tzinfo=UTC), id="london-autumn"),
    pytest.param(datetime(2026, 3, 8, 7, 0, tzinfo=UTC), id="new-york-spring"),
    pytest.param(datetime(2026, 11, 1, 6, 0, tzinfo=UTC), id="new-york-autumn"),
]


@pytest.mark.parametrize("change", DST_CHANGES)
def test_g3_n4_the_30_minutes_are_real_minutes_across_a_clock_change(clinic, change):
    """SPEC §G3/§N4: pre-dose vitals taken 10 minutes before the clocks change are 30 real
    minutes old 20 minutes after it — the wall clock moving an hour changes nothing."""
    with time_machine.travel(change - timedelta(minutes=10), tick=False):
        session = clinic.checked_in(clinic.course())
        reading = clinic.vitals(session, **NORMAL)
    at = reading.measured_at + timedelta(minutes=30)
    assert clinic.conditions(session, at=at)["predose-vitals"].met
    assert not clinic.conditions(session, at=at + timedelta(seconds=1))["predose-vitals"].met


@pytest.mark.parametrize("change", DST_CHANGES)
def test_m5_n4_two_raised_readings_10_real_minutes_apart_across_a_clock_change(clinic, change):
    """SPEC §M5/§N4: the persistence window counts real minutes across a clock change."""
    with time_machine.travel(change - timedelta(minutes=30), tick=False):
        session = clinic.checked_in(clinic.course())
        clinic.vitals(session, **NORMAL)
        session = clinic.dose(session)
    with time_machine.travel(change - timedelta(minutes=5), tick=False):
        clinic.vitals(session, **{**NORMAL, "sbp": 185})
    with time_machine.travel(change + timedelta(minutes=5), tick=False):
        second = clinic.vitals(session, **{**NORMAL, "sbp": 186})
    assert second.alerts.filter(level=Alert.Level.CRITICAL, field="sbp").exists()
