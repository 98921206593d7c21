"""Checks during treatment (SPEC §M5–M8, §D), each rule at its edge.

Sources: SPEC §M6 ("Required checks come from the protocol schedule relative to dose start and
to the *actual* infusion end / last device (re-planned when it is recorded); recovery checks
continue until discharge"; "A check met only by a reading later marked entered-in-error is open
again"), §M5 ("A warning that asks for a repeat reading creates a timed required check";
"SBP ≥ 180 / DBP ≥ 110 on two consecutive valid readings at least 5 minutes apart within the
protocol's persistence window (default 15 minutes, so the 10-minute IV schedule reaches it)"),
§D (IV: every 10 min during infusion, every 15 min after until discharge; esketamine: 28 mg
devices, 5 minutes between devices — Spravato label).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError

from monitoring import services
from monitoring.evaluation import plan_checks
from monitoring.models import Alert
from protocols.models import Protocol
from protocols.services import current_version
from tests.clinical.conftest import NORMAL

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 6, 10, 9, 0, tzinfo=UTC)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def iv_rules():
    return current_version(Protocol.objects.get(slug="iv-ketamine")).parsed


def dosing_session(clinic, slug="iv-ketamine"):
    """Checked in at T0, normal pre-dose vitals at T0 + 5, dose at T0 + 10."""
    with time_machine.travel(T0, tick=False):
        session = clinic.checked_in(clinic.course(slug))
    with time_machine.travel(T0 + minutes(5), tick=False):
        clinic.vitals(session, **NORMAL)
    with time_machine.travel(T0 + minutes(10), tick=False):
        return clinic.dose(session)


def due_minutes(session, code_prefix: str) -> list[float]:
    start = session.dose_started_at
    return [
        (c.due_at - start).total_seconds() / 60
        for c in session.checks.required().filter(code__startswith=code_prefix).order_by("due_at")
    ]


# --- §M6: the schedule follows what actually happened --------------------------------------------


def test_m6_infusion_ending_late_extends_during_checks_and_moves_recovery(clinic):
    """SPEC §M6: the infusion ran 50 min, not 40: a "during" check at 50 is required, and the
    recovery checks run every 15 min from the actual end."""
    session = dosing_session(clinic)
    start = session.dose_started_at
    with time_machine.travel(start + minutes(50), tick=False):
        services.dose_complete(
            session=session, acting_user=clinic.nurse, ended_at=start + minutes(50)
        )
    session = clinic.fresh(session)
    assert due_minutes(session, "infusion") == [10, 20, 30, 40, 50]
    assert due_minutes(session, "recovery")[:4] == [65, 80, 95, 110]
    # The recovery checks planned from the planned end (55, 70, ...) are withdrawn, not deleted.
    withdrawn = session.checks.filter(code__startswith="recovery", voided_at__isnull=False)
    assert withdrawn.exists()
    assert all("actual end" in c.void_reason for c in withdrawn)


def test_m6_infusion_ending_early_withdraws_later_during_checks(clinic):
    """SPEC §M6: an infusion stopped at 30 min has no "during" check at 40; recovery starts
    from 30."""
    session = dosing_session(clinic)
    start = session.dose_started_at
    with time_machine.travel(start + minutes(30), tick=False):
        clinic.vitals(session, **NORMAL)
        services.dose_complete(
            session=session, acting_user=clinic.nurse, ended_at=start + minutes(30)
        )
    session = clinic.fresh(session)
    assert due_minutes(session, "infusion") == [10, 20, 30]
    assert due_minutes(session, "recovery") == [45, 60, 75, 90]


def test_m6_during_checks_run_on_while_the_infusion_runs_past_its_planned_end(clinic):
    """SPEC §M6: until the end is recorded, the infusion is still running: a check falls due at
    50 min while it runs."""
    session = dosing_session(clinic)
    start = session.dose_started_at
    with time_machine.travel(start + minutes(45), tick=False):
        clinic.vitals(session, **NORMAL)
    assert 50 in due_minutes(clinic.fresh(session), "infusion")


def test_m6_recovery_checks_continue_until_discharge_not_until_the_minimum_observation(clinic):
    """SPEC §M6: "recovery checks continue until discharge" — a patient kept 35 minutes past the
    minimum observation owes the checks that fell due meanwhile; one not recorded blocks the
    discharge."""
    session = dosing_session(clinic)
    start = session.dose_started_at
    end = start + minutes(40)
    with time_machine.travel(end, tick=False):
        services.dose_complete(session=session, acting_user=clinic.nurse, ended_at=end)
    # Record every check on time up to the observation end (40 + 60).
    for due in (10, 20, 30, 40, 55, 70, 85, 100):
        with time_machine.travel(start + minutes(due), tick=False):
            clinic.vitals(session, **NORMAL)
            if due in (10, 40):
                services.observation_record(
                    session=session, acting_user=clinic.nurse, kind="cadss", cadss_total=4
                )
    with (
        time_machine.travel(start + minutes(130), tick=False),
        pytest.raises(ValidationError) as refused,
    ):
        discharge(clinic, session)
    # Recovery checks 5 (115 min) and 6 (130 min) fell due after the minimum observation.
    assert "Vitals after infusion (5)" in str(refused.value)
    assert "Vitals after infusion (6)" in str(refused.value)


def discharge(clinic, session, **overrides):
    values = {
        "aldrete_activity": 2,
        "aldrete_respiration": 2,
        "aldrete_circulation": 2,
        "aldrete_consciousness": 2,
        "aldrete_spo2": 2,
        "moaas": 5,
        "escort_present": True,
        "no_driving_instruction_given": True,
        "prescriber_decision": "Fit to leave",
        "ready_to_leave_minutes": None,
        "notes": "",
    }
    values.update(overrides)
    return services.session_discharge(
        session=clinic.fresh(session),
        signer=clinic.anesthesiologist,
        password=clinic.password,
        **values,
    )


def test_m6_recovery_checks_due_after_the_discharge_are_withdrawn_at_discharge(clinic):
    """SPEC §M6: checks end with the discharge; the next one, not yet due, is not owed."""
    session = dosing_session(clinic)
    start = session.dose_started_at
    with time_machine.travel(start + minutes(40), tick=False):
        services.dose_complete(
            session=session, acting_user=clinic.nurse, ended_at=start + minutes(40)
        )
    for due in (10, 20, 30, 40, 55, 70, 85, 100):
        with time_machine.travel(start + minutes(due), tick=False):
            clinic.vitals(session, **NORMAL)
            if due in (10, 40):
                services.observation_record(
                    session=session, acting_user=clinic.nurse, kind="cadss", cadss_total=4
                )
    with time_machine.travel(start + minutes(104), tick=False):
        services.observation_record(
            session=session, acting_user=clinic.nurse, kind="cadss", cadss_total=2
        )
        clinic.vitals(session, **NORMAL)
        discharged = discharge(clinic, session)
    assert discharged.status == "discharged"
    assert not discharged.checks.required().filter(due_at__gt=discharged.discharged_at).exists()


# --- §M6 / §M8: a check met only by a reading in error is open again -----------------------------


def test_m8_a_check_met_only_by_a_reading_marked_in_error_is_open_again(clinic):
    session = dosing_session(clinic)
    start = session.dose_started_at
    with time_machine.travel(start + minutes(10), tick=False):
        reading = clinic.vitals(session, **NORMAL)
    check = session.checks.get(code="infusion-1")
    assert check.satisfied_at == reading.measured_at
    with time_machine.travel(start + minutes(12), tick=False):
        services.vitals_mark_error(reading=reading, acting_user=clinic.nurse, reason="Cuff off")
    check.refresh_from_db()
    assert check.satisfied_at is None
    # Another valid reading in the window meets it again.
    with time_machine.travel(start + minutes(13), tick=False):
        again = clinic.vitals(session, **NORMAL)
    check.refresh_from_db()
    assert check.satisfied_at == again.measured_at


def test_m8_a_check_with_a_second_valid_reading_stays_met(clinic):
    session = dosing_session(clinic)
    start = session.dose_started_at
    with time_machine.travel(start + minutes(9), tick=False):
        first = clinic.vitals(session, **NORMAL)
    with time_machine.travel(start + minutes(11), tick=False):
        second = clinic.vitals(session, **NORMAL)
        services.vitals_mark_error(reading=first, acting_user=clinic.nurse, reason="Cuff off")
    check = session.checks.get(code="infusion-1")
    assert check.satisfied_at == second.measured_at


# --- §M5: the repeat reading after a BP warning is a timed required check ------------------------


@pytest.mark.parametrize(
    ("after", "met"),
    [
        (minutes(4) + timedelta(seconds=59), True),
        (minutes(5), True),
        (minutes(5) + timedelta(seconds=1), False),
    ],
    ids=["4m59s", "exactly-5m", "5m01s"],
)
def test_m5_a_bp_warning_creates_a_repeat_check_due_within_5_minutes(clinic, after, met):
    """SPEC §M5: "SBP ≥ 180 or DBP ≥ 110 → repeat reading requested within 5 minutes"."""
    session = dosing_session(clinic)
    at = session.dose_started_at + minutes(12)
    with time_machine.travel(at, tick=False):
        warned = clinic.vitals(session, **{**NORMAL, "sbp": 182, "dbp": 95})
    check = session.checks.get(after_reading=warned)
    assert check.due_at == warned.measured_at + minutes(5)
    assert check.overdue_at == check.due_at
    with time_machine.travel(at + after, tick=False):
        clinic.vitals(session, **{**NORMAL, "sbp": 150})
    check.refresh_from_db()
    assert (check.satisfied_at is not None) is met


def test_m5_the_warning_reading_itself_does_not_meet_its_repeat_check(clinic):
    session = dosing_session(clinic)
    with time_machine.travel(session.dose_started_at + minutes(12), tick=False):
        warned = clinic.vitals(session, **{**NORMAL, "sbp": 170, "dbp": 112})
    check = session.checks.get(after_reading=warned)
    assert check.satisfied_at is None
    assert "Repeat BP" in check.label


def test_m5_no_repeat_check_below_the_warning(clinic):
    session = dosing_session(clinic)
    with time_machine.travel(session.dose_started_at + minutes(12), tick=False):
        reading = clinic.vitals(session, **{**NORMAL, "sbp": 179, "dbp": 109})
    assert not session.checks.filter(after_reading=reading).exists()


# --- §M5: two consecutive raised readings within the persistence window ---------------------------


def raised_pair(clinic, gap: timedelta, first=182, second=185, between=None):
    session = dosing_session(clinic)
    t = session.dose_started_at + minutes(10)
    with time_machine.travel(t, tick=False):
        clinic.vitals(session, **{**NORMAL, "sbp": first})
    if between is not None:
        with time_machine.travel(t + gap / 2, tick=False):
            clinic.vitals(session, **{**NORMAL, **between})
    with time_machine.travel(t + gap, tick=False):
        second_reading = clinic.vitals(session, **{**NORMAL, "sbp": second})
    return session, second_reading


def critical_sbp(reading) -> bool:
    return reading.alerts.filter(level=Alert.Level.CRITICAL, field="sbp").exists()


@pytest.mark.parametrize(
    ("gap", "critical"),
    [
        (minutes(4) + timedelta(seconds=59), False),
        (minutes(5), True),
        (minutes(10), True),
        (minutes(15), True),
        (minutes(15) + timedelta(seconds=1), False),
    ],
    ids=["4m59s-too-close", "5m", "10m-iv-schedule", "15m-window-edge", "15m01s-outside"],
)
def test_m5_sbp_180_on_two_consecutive_readings_within_the_window_is_critical(
    clinic, gap, critical
):
    """SPEC §M5: at least 5 minutes apart within the persistence window (default 15 min)."""
    _, second = raised_pair(clinic, gap)
    assert critical_sbp(second) is critical


def test_m5_a_normal_reading_in_between_breaks_the_run(clinic):
    """SPEC §M5: "two *consecutive* valid readings"."""
    _, second = raised_pair(clinic, minutes(10), between={"sbp": 150})
    assert not critical_sbp(second)


def test_m5_an_spo2_only_reading_in_between_does_not_break_the_run(clinic):
    _, second = raised_pair(
        clinic,
        minutes(10),
        between={"sbp": None, "dbp": None, "hr": None, "rr": None, "moaas": None, "spo2": 97},
    )
    assert critical_sbp(second)


def test_m5_the_persistence_window_is_protocol_data(clinic):
    """SPEC §M5: "within the protocol's persistence window" — a version with a 20-minute
    window escalates two raised readings 20 minutes apart."""

    def widen(rules):
        for rule in rules["alerts"]:
            if rule.get("persistence_window_minutes"):
                rule["persistence_window_minutes"] = 20

    clinic.publish("iv-ketamine", widen)
    _, second = raised_pair(clinic, minutes(20))
    assert critical_sbp(second)


def test_m5_a_raised_reading_marked_in_error_does_not_count_for_persistence(clinic):
    session = dosing_session(clinic)
    t = session.dose_started_at + minutes(10)
    with time_machine.travel(t, tick=False):
        wrong = clinic.vitals(session, **{**NORMAL, "sbp": 190})
        services.vitals_mark_error(reading=wrong, acting_user=clinic.nurse, reason="Cuff size")
    with time_machine.travel(t + minutes(10), tick=False):
        second = clinic.vitals(session, **{**NORMAL, "sbp": 185})
    assert not critical_sbp(second)


# --- §D / §M2: esketamine devices 5 minutes apart -----------------------------------------------


@pytest.mark.parametrize(
    ("last_device_after", "accepted"),
    [(minutes(4) + timedelta(seconds=59), False), (minutes(5), True), (minutes(6), True)],
    ids=["4m59s", "5m", "6m"],
)
def test_m2_esketamine_devices_are_at_least_5_minutes_apart(clinic, last_device_after, accepted):
    """SPEC §M2 / Spravato label: 56 mg = 2 devices, 5 minutes between devices."""
    session = dosing_session(clinic, "esketamine-rems")
    assert session.doses.get().devices == 2
    ended = session.dose_started_at + last_device_after
    with time_machine.travel(ended + minutes(1), tick=False):
        if accepted:
            services.dose_complete(session=session, acting_user=clinic.nurse, ended_at=ended)
            assert clinic.fresh(session).dose_ended_at == ended
        else:
            with pytest.raises(ValidationError, match="5 min apart"):
                services.dose_complete(session=session, acting_user=clinic.nurse, ended_at=ended)


# --- §N4: the schedule across daylight-saving changes -------------------------------------------


@pytest.mark.parametrize(
    ("zone", "start_utc"),
    [
        ("Europe/London", datetime(2026, 3, 29, 0, 30, tzinfo=UTC)),  # clocks go forward 01:00 UTC
        ("Europe/London", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),  # clocks go back 01:00 UTC
        ("America/New_York", datetime(2026, 3, 8, 6, 30, tzinfo=UTC)),  # forward 07:00 UTC
        ("America/New_York", datetime(2026, 11, 1, 5, 30, tzinfo=UTC)),  # back 06:00 UTC
    ],
    ids=["london-spring", "london-autumn", "new-york-spring", "new-york-autumn"],
)
def test_n4_check_due_times_are_elapsed_minutes_across_dst(db, zone, start_utc):
    """SPEC §N4/§M6: a check 10 minutes after a dose started in local time across a DST change
    is 10 real minutes later, and the observation ends 100 real minutes after the start."""
    rules = iv_rules()
    start = start_utc.astimezone(ZoneInfo(zone))
    end = (start_utc + timedelta(minutes=40)).astimezone(ZoneInfo(zone))
    planned = plan_checks(rules, dose_started_at=start, dose_ended_at=end)
    during = [c for c in planned if c.code.startswith("infusion")]
    assert [(c.due_at - start_utc).total_seconds() / 60 for c in during] == [10, 20, 30, 40]
    recovery = [c for c in planned if c.code.startswith("recovery")]
    assert (recovery[-1].due_at - start_utc) == timedelta(minutes=100)


def test_m6_the_close_gate_counts_recovery_checks_fallen_due_without_any_write(clinic):
    """SPEC §M6/§G4: a recovery check falls due after the minimum observation even when nothing
    has been charted since; the before-discharge checklist names it without a page write."""
    from monitoring import gates

    session = dosing_session(clinic)
    start = session.dose_started_at
    with time_machine.travel(start + minutes(40), tick=False):
        services.dose_complete(
            session=session, acting_user=clinic.nurse, ended_at=start + minutes(40)
        )
    session = clinic.fresh(session)
    assert not session.checks.filter(code="recovery-6").exists()
    at_edge = gates.close_gate(session, at=start + minutes(130) - timedelta(seconds=1))
    after = gates.close_gate(session, at=start + minutes(130))
    checks_before = next(c for c in at_edge if c.code == "checks")
    checks_after = next(c for c in after if c.code == "checks")
    assert "Vitals after infusion (6)" not in checks_before.detail
    assert "Vitals after infusion (6)" in checks_after.detail
