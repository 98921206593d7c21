"""Vitals (SPEC §M3, §M4, §M8), alerts (§M5) and elapsed time across daylight-saving changes (§N4).

Every limit and threshold comes from the session's protocol version (`session.rules`). The tests
are parametrized over the shipped rule documents (`protocols.defaults`), parsed exactly as the
app parses them, and each test reads its rule back from the session by index; a guard test fails
if the session's version and the parametrization ever drift apart.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from clinic.models import Notification, Role
from monitoring import services
from monitoring.evaluation import FAHRENHEIT_HINT, minutes_between, plan_checks
from monitoring.gates import observation_ends_at
from monitoring.models import Alert, TreatmentSession, VitalReading
from protocols.defaults import IV_KETAMINE
from protocols.rules import parse_rules
from protocols.services import DBP_NOT_BELOW_SBP, PLAUSIBILITY
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SHIPPED = parse_rules(IV_KETAMINE)
NORMAL = {"sbp": 125, "dbp": 80, "hr": 70, "rr": 14, "spo2": 98, "moaas": 5}
INCLUSIVE = {">=", "<=", "=="}
UPWARD = {">", ">="}


def step(field: str) -> Decimal:
    """The smallest change a nurse can enter: tenths of a degree, whole units otherwise."""
    return Decimal("0.1") if field == "temperature_c" else Decimal(1)


def entered(field: str, value: Decimal):
    """A value as the vitals form hands it to the service."""
    return value if field == "temperature_c" else int(value)


def record(session, user, **values) -> VitalReading:
    return services.vitals_record(session=session, acting_user=user, **values)


def errors_of(caught) -> dict[str, list[str]]:
    return caught.value.message_dict


# --- The parametrization matches the session's protocol version ----------------------------------


def test_the_parametrization_covers_the_rules_of_the_session_protocol_version(checked_in):
    rules = checked_in.rules
    assert rules.plausibility == SHIPPED.plausibility
    assert rules.fahrenheit_hint == SHIPPED.fahrenheit_hint
    assert rules.alerts == SHIPPED.alerts


# --- Plausibility (§M4): a field error, nothing saved --------------------------------------------

VITAL_LIMITS = [field for field in SHIPPED.plausibility if field in services.VITAL_FIELDS]
PLAUSIBILITY_CASES = [
    pytest.param(field, edge, id=f"{field}-{edge}")
    for field in VITAL_LIMITS
    for edge in ("low", "high", "below-low", "above-high")
]


def plausibility_probe(limit, field: str, edge: str) -> Decimal:
    return {
        "low": limit.low,
        "high": limit.high,
        "below-low": limit.low - step(field),
        "above-high": limit.high + step(field),
    }[edge]


@pytest.mark.parametrize(("field", "edge"), PLAUSIBILITY_CASES)
def test_plausibility_limits_accept_their_bounds_and_refuse_one_step_beyond(
    checked_in, nurse, field, edge
):
    limit = checked_in.rules.plausibility[field]
    value = entered(field, plausibility_probe(limit, field, edge))

    if edge in {"low", "high"}:
        reading = record(checked_in, nurse, **{field: value})
        assert getattr(reading, field) == value
        assert checked_in.vitals.count() == 1
        return
    with pytest.raises(ValidationError) as caught:
        record(checked_in, nurse, **{field: value})
    assert errors_of(caught)[field] == [PLAUSIBILITY.format(low=limit.low, high=limit.high)]
    assert not checked_in.vitals.exists()


@pytest.mark.parametrize("edge", ["low", "high"])
def test_a_temperature_in_the_fahrenheit_range_asks_whether_it_was_entered_in_f(
    checked_in, nurse, edge
):
    hint = checked_in.rules.fahrenheit_hint
    value = getattr(hint, edge)

    with pytest.raises(ValidationError) as caught:
        record(checked_in, nurse, temperature_c=value)

    assert errors_of(caught)["temperature_c"] == [FAHRENHEIT_HINT]
    assert not checked_in.vitals.exists()


@pytest.mark.parametrize("edge", ["below-low", "above-high"])
def test_a_temperature_just_outside_the_fahrenheit_range_gets_the_plain_limit_error(
    checked_in, nurse, edge
):
    hint = checked_in.rules.fahrenheit_hint
    value = hint.low - step("temperature_c") if edge == "below-low" else hint.high + Decimal("0.1")
    limit = checked_in.rules.plausibility["temperature_c"]
    assert not limit.contains(value)  # premise: the °F range lies above the plausible °C range

    with pytest.raises(ValidationError) as caught:
        record(checked_in, nurse, temperature_c=value)

    assert errors_of(caught)["temperature_c"] == [
        PLAUSIBILITY.format(low=limit.low, high=limit.high)
    ]
    assert not checked_in.vitals.exists()


def test_a_diastolic_pressure_not_below_the_systolic_is_refused(checked_in, nurse):
    with pytest.raises(ValidationError) as caught:
        record(checked_in, nurse, **{**NORMAL, "dbp": NORMAL["sbp"]})

    assert errors_of(caught)["dbp"] == [DBP_NOT_BELOW_SBP]
    assert not checked_in.vitals.exists()


def test_every_implausible_field_gets_its_own_error_and_nothing_is_saved(checked_in, nurse):
    limits = checked_in.rules.plausibility
    values = {f: entered(f, limits[f].high + step(f)) for f in VITAL_LIMITS}

    with pytest.raises(ValidationError) as caught:
        record(checked_in, nurse, **values)

    assert set(errors_of(caught)) == set(VITAL_LIMITS)
    assert not checked_in.vitals.exists()


def test_the_vitals_form_shows_the_fahrenheit_hint_and_saves_nothing(client, nurse, checked_in):
    client.force_login(nurse)

    response = client.post(
        reverse("monitoring:vitals_new", args=[checked_in.pk]),
        {**NORMAL, "temperature_c": "98.6", "client_token": str(uuid.uuid4())},
    )

    assert response.status_code == 200
    assert FAHRENHEIT_HINT in response.content.decode()
    assert not checked_in.vitals.exists()


@pytest.mark.parametrize("field", ["sbp", "dbp", "hr", "rr", "spo2"])
def test_the_vitals_form_refuses_a_fraction_where_a_whole_number_is_measured(
    client, nurse, checked_in, field
):
    client.force_login(nurse)
    data = {**NORMAL, field: f"{NORMAL[field]}.5", "client_token": str(uuid.uuid4())}

    response = client.post(
        reverse("monitoring:vitals_new", args=[checked_in.pk]), data, HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 200
    assert f'data-field="{field}"' in response.content.decode()
    assert not checked_in.vitals.exists()


# --- Alert thresholds (§M5), one probe per side of every rule ------------------------------------


def simple(rule) -> bool:
    return not rule.over_baseline and rule.persistence_window_minutes is None


def rule_id(rule) -> str:
    kind = "-rise" if rule.over_baseline else ""
    repeat = f"-x2in{rule.persistence_window_minutes}" if rule.persistence_window_minutes else ""
    return f"{rule.level}-{rule.field}{kind}{rule.op}{rule.value}{repeat}"


def probe_value(rule, probe: str, baseline: VitalReading):
    """`at` the threshold, one step `inside` (matching side) or `outside` it."""
    s = step(rule.field)
    delta = {
        "at": rule.value,
        "inside": rule.value + s if rule.op in UPWARD else rule.value - s,
        "outside": rule.value - s if rule.op in UPWARD else rule.value + s,
    }[probe]
    if rule.over_baseline:
        delta += Decimal(getattr(baseline, rule.field))
    return entered(rule.field, delta)


ALERT_PROBES = [
    pytest.param(index, probe, id=f"{rule_id(rule)}-{probe}")
    for index, rule in enumerate(SHIPPED.alerts)
    for probe in ("at", "inside", "outside")
    if not (probe == "inside" and rule.op == "==")
]


@pytest.fixture
def monitoring_now(dosing, time_machine) -> TreatmentSession:
    """Half an hour into the session, the clock frozen (measured_at values are exact)."""
    time_machine.move_to(dosing.dose_started_at + timedelta(minutes=30), tick=False)
    return dosing


def baseline_of(session) -> VitalReading:
    return session.vitals.get(is_predose=True)


@pytest.mark.parametrize(("index", "probe"), ALERT_PROBES)
def test_each_alert_rule_fires_from_exactly_its_threshold(monitoring_now, nurse, index, probe):
    session = monitoring_now
    rules = session.rules.alerts
    rule = rules[index]
    baseline = baseline_of(session)
    value = probe_value(rule, probe, baseline)
    if rule.persistence_window_minutes is not None:
        # The first of the two readings: matching, exactly the minimum gap before.
        record(
            session,
            nurse,
            measured_at=timezone.now() - timedelta(minutes=rule.persistence_min_gap_minutes),
            **{rule.field: probe_value(rule, "inside", baseline)},
        )

    reading = record(session, nurse, **{rule.field: value})

    expected = probe == "inside" or (probe == "at" and rule.op in INCLUSIVE)
    if expected and rule.level == "warning":
        # Premise: no critical on the same field fires for this value (it would supersede it).
        assert not [
            c
            for c in rules
            if c.level == "critical" and c.field == rule.field and simple(c) and c.matches(value)
        ]
    raised = {a.message: a.level for a in reading.alerts.all()}
    assert (rule.message in raised) is expected, raised
    if expected:
        assert raised[rule.message] == rule.level


def strongest_probe(rule):
    return probe_value(rule, "at" if rule.op == "==" else "inside", None)


SUPERSEDING = [
    pytest.param(index, id=rule_id(critical))
    for index, critical in enumerate(SHIPPED.alerts)
    if critical.level == "critical"
    and simple(critical)
    and any(
        w.level == "warning"
        and w.field == critical.field
        and simple(w)
        and w.matches(strongest_probe(critical))
        for w in SHIPPED.alerts
    )
]


@pytest.mark.parametrize("index", SUPERSEDING)
def test_a_critical_alert_on_a_field_supersedes_the_warnings_on_that_field(
    monitoring_now, nurse, index
):
    session = monitoring_now
    rules = session.rules.alerts
    critical = rules[index]
    value = strongest_probe(critical)
    warnings = [w for w in rules if w.level == "warning" and w.field == critical.field]
    assert any(w.matches(value) for w in warnings if simple(w))  # premise: both would fire

    reading = record(session, nurse, **{critical.field: value})

    on_field = list(reading.alerts.filter(field=critical.field).values_list("level", "message"))
    assert ("critical", critical.message) in on_field
    assert all(level == "critical" for level, _ in on_field), on_field


REPEAT_GAPS = {
    # SPEC §M5: two consecutive readings at least the gap apart (default 5 min) within the
    # persistence window (default 15 min): the 10-minute IV schedule reaches it.
    "a-minute-inside-the-gap": lambda r: r.persistence_min_gap_minutes - 1,
    "exactly-the-gap": lambda r: r.persistence_min_gap_minutes,
    "the-iv-schedule": lambda r: 10,
    "exactly-the-window": lambda r: r.persistence_window_minutes,
    "a-minute-past-the-window": lambda r: r.persistence_window_minutes + 1,
}
REPEAT_RULES = [
    pytest.param(index, gap, id=f"{rule_id(rule)}-{gap}")
    for index, rule in enumerate(SHIPPED.alerts)
    if rule.persistence_window_minutes is not None
    for gap in REPEAT_GAPS
]


@pytest.mark.parametrize(("index", "gap"), REPEAT_RULES)
def test_m5_two_consecutive_readings_are_critical_from_the_gap_to_the_window(
    monitoring_now, nurse, index, gap
):
    session = monitoring_now
    rules = session.rules.alerts
    rule = rules[index]
    (warning,) = [
        w
        for w in rules
        if w.level == "warning"
        and simple(w)
        and (w.field, w.op, w.value) == (rule.field, rule.op, rule.value)
    ]
    value = entered(rule.field, rule.value)
    assert rule.matches(value)
    first_at = session.dose_started_at + timedelta(minutes=1)
    minutes = REPEAT_GAPS[gap](rule)
    critical = rule.persistence_min_gap_minutes <= minutes <= rule.persistence_window_minutes

    first = record(session, nurse, measured_at=first_at, **{rule.field: value})
    second = record(
        session, nurse, measured_at=first_at + timedelta(minutes=minutes), **{rule.field: value}
    )

    assert rule.message not in set(first.alerts.values_list("message", flat=True))
    raised = dict(second.alerts.filter(field=rule.field).values_list("message", "level"))
    if critical:
        assert raised[rule.message] == "critical"
        assert warning.message not in raised
    else:
        assert rule.message not in raised
        assert raised[warning.message] == "warning"
        assert "critical" not in raised.values()


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(i, id=rule_id(r))
        for i, r in enumerate(SHIPPED.alerts)
        if r.persistence_window_minutes is not None
    ],
)
def test_two_readings_entered_out_of_order_are_still_critical(monitoring_now, nurse, index):
    session = monitoring_now
    rule = session.rules.alerts[index]
    value = entered(rule.field, rule.value)
    later = timezone.now()

    record(session, nurse, measured_at=later, **{rule.field: value})
    record(
        session,
        nurse,
        measured_at=later - timedelta(minutes=rule.persistence_min_gap_minutes),
        **{rule.field: value},
    )

    raised = set(
        Alert.objects.filter(session=session, level="critical").values_list("message", flat=True)
    )
    assert rule.message in raised


def test_a_reading_marked_in_error_does_not_count_as_the_first_of_two(monitoring_now, nurse):
    session = monitoring_now
    rule = next(r for r in session.rules.alerts if r.persistence_window_minutes is not None)
    value = entered(rule.field, rule.value)
    first_at = session.dose_started_at + timedelta(minutes=1)
    first = record(session, nurse, measured_at=first_at, **{rule.field: value})
    services.vitals_mark_error(reading=first, acting_user=nurse, reason="Cuff too small")

    second = record(
        session,
        nurse,
        measured_at=first_at + timedelta(minutes=rule.persistence_min_gap_minutes),
        **{rule.field: value},
    )

    assert rule.message not in set(second.alerts.values_list("message", flat=True))


def test_m5_predose_readings_raise_the_same_alerts(checked_in, nurse):
    """SPEC §M5: "Alerts are evaluated on every saved reading, pre-dose readings included"."""
    rule = next(r for r in checked_in.rules.alerts if r.level == "critical" and simple(r))
    value = probe_value(rule, "inside" if rule.op != "==" else "at", None)

    record(checked_in, nurse, **{rule.field: value})

    assert Alert.objects.filter(session=checked_in, level="critical", message=rule.message).exists()


# --- Critical alerts: notification and acknowledgement -------------------------------------------


def first_critical(session):
    return next(r for r in session.rules.alerts if r.level == "critical" and simple(r))


def raise_critical(session, nurse) -> Alert:
    rule = first_critical(session)
    probe = "at" if rule.op in INCLUSIVE else "inside"
    reading = record(session, nurse, **{rule.field: probe_value(rule, probe, None)})
    return reading.alerts.get(level="critical")


def test_a_critical_alert_notifies_the_supervising_clinician(
    monitoring_now, nurse, anesthesiologist
):
    session = monitoring_now
    assert session.supervising_clinician == anesthesiologist

    alert = raise_critical(session, nurse)

    (note,) = Notification.objects.filter(kind=Notification.Kind.CRITICAL_ALERT)
    assert note.recipient == anesthesiologist
    assert note.url == reverse("monitoring:session", args=[session.pk])
    assert str(getattr(alert.reading, alert.field)) not in note.title  # no clinical value (§N6)


def test_a_warning_alone_notifies_nobody(monitoring_now, nurse):
    session = monitoring_now
    rule = next(
        r
        for r in session.rules.alerts
        if r.level == "warning"
        and simple(r)
        and not any(
            c.matches(probe_value(r, "inside", None))
            for c in session.rules.alerts
            if c.level == "critical" and c.field == r.field
        )
    )

    reading = record(session, nurse, **{rule.field: probe_value(rule, "inside", None)})

    assert reading.alerts.filter(level="warning").exists()
    assert not Notification.objects.filter(kind=Notification.Kind.CRITICAL_ALERT).exists()


def test_a_nurse_cannot_acknowledge_a_critical_alert(monitoring_now, nurse):
    alert = raise_critical(monitoring_now, nurse)

    with pytest.raises(PermissionDenied):
        services.alert_acknowledge(alert=alert, acting_user=nurse, action_taken="Repositioned")

    alert.refresh_from_db()
    assert alert.acknowledged_at is None
    assert alert.acknowledged_by is None
    assert alert.action_taken == ""


def test_an_anesthesiologist_of_another_site_cannot_acknowledge(monitoring_now, nurse, other_site):
    stranger = UserFactory(roles=[Role.ANESTHESIOLOGIST], sites=[other_site])
    alert = raise_critical(monitoring_now, nurse)

    with pytest.raises(PermissionDenied):
        services.alert_acknowledge(alert=alert, acting_user=stranger, action_taken="Oxygen")

    alert.refresh_from_db()
    assert alert.acknowledged_at is None


@pytest.mark.parametrize("role", ["anesthesiologist", "psychiatrist"])
def test_a_supervising_clinician_acknowledges_with_the_action_taken(
    request, monitoring_now, nurse, role
):
    clinician = request.getfixturevalue(role)
    alert = raise_critical(monitoring_now, nurse)

    services.alert_acknowledge(
        alert=alert, acting_user=clinician, action_taken="  Oxygen 2 L/min, infusion paused  "
    )

    alert.refresh_from_db()
    assert alert.acknowledged_by == clinician
    assert alert.acknowledged_at == timezone.now()
    assert alert.action_taken == "Oxygen 2 L/min, infusion paused"


@pytest.mark.parametrize("action", ["", "   "])
def test_acknowledging_without_an_action_is_refused(
    monitoring_now, nurse, anesthesiologist, action
):
    alert = raise_critical(monitoring_now, nurse)

    with pytest.raises(ValidationError) as caught:
        services.alert_acknowledge(alert=alert, acting_user=anesthesiologist, action_taken=action)

    assert "action_taken" in errors_of(caught)
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_an_alert_is_acknowledged_once(monitoring_now, nurse, anesthesiologist, psychiatrist):
    alert = raise_critical(monitoring_now, nurse)
    services.alert_acknowledge(alert=alert, acting_user=anesthesiologist, action_taken="Oxygen")

    with pytest.raises(ValidationError):
        services.alert_acknowledge(alert=alert, acting_user=psychiatrist, action_taken="Again")

    alert.refresh_from_db()
    assert alert.acknowledged_by == anesthesiologist


def test_the_acknowledge_page_is_forbidden_to_a_nurse(client, monitoring_now, nurse):
    alert = raise_critical(monitoring_now, nurse)
    client.force_login(nurse)

    response = client.post(
        reverse("monitoring:alert_acknowledge", args=[alert.pk]), {"action_taken": "Oxygen"}
    )

    assert response.status_code == 403
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


# --- Measured-at, late entries, corrections, double submits (§M3, §M8) ---------------------------


def test_a_measurement_time_in_the_future_is_refused(checked_in, nurse, time_machine):
    time_machine.move_to(timezone.now(), tick=False)

    with pytest.raises(ValidationError) as caught:
        record(
            checked_in,
            nurse,
            measured_at=timezone.now() + services.FUTURE_TOLERANCE + timedelta(seconds=1),
            **NORMAL,
        )

    assert errors_of(caught)["measured_at"] == [services.MEASURED_IN_FUTURE]
    assert not checked_in.vitals.exists()


def test_a_measurement_time_before_check_in_is_refused(checked_in, nurse):
    with pytest.raises(ValidationError) as caught:
        record(
            checked_in,
            nurse,
            measured_at=checked_in.checked_in_at - timedelta(seconds=1),
            **NORMAL,
        )

    assert errors_of(caught)["measured_at"] == [services.MEASURED_BEFORE_CHECK_IN]
    assert not checked_in.vitals.exists()


def test_a_reading_without_any_value_is_refused(checked_in, nurse):
    with pytest.raises(ValidationError) as caught:
        record(checked_in, nurse)

    assert errors_of(caught)["__all__"] == [services.NO_VALUES]
    assert not checked_in.vitals.exists()


@pytest.fixture
def half_an_hour_after_check_in(checked_in, time_machine) -> TreatmentSession:
    time_machine.move_to(checked_in.checked_in_at + timedelta(minutes=30), tick=False)
    return checked_in


# SPEC §M3: "Late entries (> 10 min) are marked" — the minutes are protocol data.
LATE_ENTRY = timedelta(minutes=SHIPPED.late_entry_minutes)


@pytest.mark.parametrize(
    ("back_dated_by", "late"),
    [
        pytest.param(timedelta(0), False, id="now"),
        pytest.param(LATE_ENTRY, False, id="exactly-the-limit"),
        pytest.param(LATE_ENTRY + timedelta(seconds=1), True, id="beyond-the-limit"),
    ],
)
def test_entries_back_dated_beyond_the_limit_are_marked_late(
    half_an_hour_after_check_in, nurse, back_dated_by, late
):
    now = timezone.now()

    reading = record(half_an_hour_after_check_in, nurse, measured_at=now - back_dated_by, **NORMAL)

    assert reading.entered_at == now
    assert reading.is_late is late


def test_the_session_page_marks_the_late_entry(client, half_an_hour_after_check_in, nurse):
    session = half_an_hour_after_check_in
    record(session, nurse, **NORMAL)
    record(session, nurse, measured_at=timezone.now() - LATE_ENTRY * 2, **NORMAL)
    client.force_login(nurse)

    html = client.get(reverse("monitoring:session", args=[session.pk])).content.decode()

    assert html.count("late entry") == 1


def test_entered_in_error_keeps_the_original_reading_and_its_history(
    monitoring_now, nurse, anesthesiologist
):
    session = monitoring_now
    wrong = record(session, nurse, **{**NORMAL, "sbp": 150})

    services.vitals_mark_error(reading=wrong, acting_user=nurse, reason="  Wrong patient's cuff  ")
    right = record(session, nurse, **NORMAL)

    wrong.refresh_from_db()
    assert (wrong.sbp, wrong.dbp) == (150, NORMAL["dbp"])
    assert wrong.is_valid is False
    assert wrong.entered_in_error_by == nurse
    assert wrong.error_reason == "Wrong patient's cuff"
    assert set(session.vitals.values_list("pk", flat=True)) >= {wrong.pk, right.pk}
    history = list(wrong.history.order_by("history_date", "history_id"))
    assert [h.history_type for h in history] == ["+", "~"]
    assert [h.sbp for h in history] == [150, 150]
    assert history[0].entered_in_error_at is None
    assert history[1].error_reason == "Wrong patient's cuff"
    assert history[1].history_user == nurse
    assert history[1].history_change_reason.startswith("Entered in error")


def test_marking_in_error_needs_a_reason_and_happens_once(monitoring_now, nurse):
    reading = record(monitoring_now, nurse, **NORMAL)

    with pytest.raises(ValidationError):
        services.vitals_mark_error(reading=reading, acting_user=nurse, reason="  ")
    reading.refresh_from_db()
    assert reading.is_valid

    services.vitals_mark_error(reading=reading, acting_user=nurse, reason="Artefact")
    with pytest.raises(ValidationError):
        services.vitals_mark_error(reading=reading, acting_user=nurse, reason="Again")
    reading.refresh_from_db()
    assert reading.error_reason == "Artefact"


def test_the_same_client_token_twice_saves_one_reading_and_one_alert(monitoring_now, nurse):
    session = monitoring_now
    rule = first_critical(session)
    values = {rule.field: probe_value(rule, "at" if rule.op in INCLUSIVE else "inside", None)}
    token = uuid.uuid4()

    first = record(session, nurse, client_token=token, **values)
    second = record(session, nurse, client_token=token, **values)

    assert second.pk == first.pk
    assert session.vitals.filter(client_token=token).count() == 1
    assert Alert.objects.filter(session=session, level="critical").count() == 1
    assert Notification.objects.filter(kind=Notification.Kind.CRITICAL_ALERT).count() == 1


def test_a_double_submitted_vitals_form_saves_one_reading(client, nurse, monitoring_now):
    client.force_login(nurse)
    url = reverse("monitoring:vitals_new", args=[monitoring_now.pk])
    data = {**NORMAL, "client_token": str(uuid.uuid4())}
    before = monitoring_now.vitals.count()

    for _ in range(2):
        response = client.post(url, data)
        assert response.status_code == 302

    assert monitoring_now.vitals.count() == before + 1


# --- Daylight-saving changes (§N4): Europe/London, last Sundays of March and October 2026 ------

LONDON = ZoneInfo("Europe/London")
SPRING_FORWARD = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 01:00 GMT → 02:00 BST
FALL_BACK = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)  # 02:00 BST → 01:00 GMT
PLAIN_DAY = datetime(2026, 6, 17, 9, 30, tzinfo=UTC)
CHANGES = [
    pytest.param(SPRING_FORWARD, id="spring-forward"),
    pytest.param(FALL_BACK, id="fall-back"),
]


def test_the_dst_instants_are_the_london_changes():
    for change in (SPRING_FORWARD, FALL_BACK):
        before = (change - timedelta(minutes=1)).astimezone(LONDON).utcoffset()
        after = change.astimezone(LONDON).utcoffset()
        assert before != after


@pytest.mark.parametrize("change", CHANGES)
def test_minutes_between_counts_real_minutes_across_the_change(change):
    start, end = change - timedelta(minutes=30), change + timedelta(minutes=30)

    assert minutes_between(start, end) == 60


@pytest.mark.parametrize("change", CHANGES)
def test_minutes_between_counts_real_minutes_for_site_local_times(change):
    start = (change - timedelta(minutes=30)).astimezone(LONDON)
    end = (change + timedelta(minutes=30)).astimezone(LONDON)

    assert minutes_between(start, end) == 60


def elapsed_plan(rules, start: datetime) -> list[tuple[str, float | None]]:
    """(code, real minutes from the dose start) of each planned check."""
    start_utc = start.astimezone(UTC)
    return [
        (
            c.code,
            None
            if c.due_at is None
            else (c.due_at.astimezone(UTC) - start_utc).total_seconds() / 60,
        )
        for c in plan_checks(rules, dose_started_at=start)
    ]


@pytest.mark.parametrize("protocol", ["iv_protocol", "esketamine_protocol"])
@pytest.mark.parametrize("change", CHANGES)
def test_plan_checks_keeps_real_minutes_across_the_change(request, protocol, change):
    rules = request.getfixturevalue(protocol).versions.published().latest("version").parsed
    start = change - timedelta(minutes=30)

    assert elapsed_plan(rules, start) == elapsed_plan(rules, PLAIN_DAY)


@pytest.mark.parametrize("protocol", ["iv_protocol", "esketamine_protocol"])
@pytest.mark.parametrize("change", CHANGES)
def test_plan_checks_keeps_real_minutes_for_a_site_local_dose_start(request, protocol, change):
    rules = request.getfixturevalue(protocol).versions.published().latest("version").parsed
    start = (change - timedelta(minutes=30)).astimezone(LONDON)

    assert elapsed_plan(rules, start) == elapsed_plan(rules, PLAIN_DAY)


def dose_at_the_change(request, time_machine, change) -> TreatmentSession:
    """A session built with the clock just before `change`; the dose starts 30 min before it."""
    time_machine.move_to(change - timedelta(minutes=40), tick=False)
    return request.getfixturevalue("ready")


@pytest.mark.parametrize("change", CHANGES)
def test_a_session_dosed_across_the_change_counts_real_minutes(
    request, client, time_machine, change
):
    session = dose_at_the_change(request, time_machine, change)
    nurse, psychiatrist, lot = (
        request.getfixturevalue(n) for n in ("nurse", "psychiatrist", "ketamine_lot")
    )
    time_machine.move_to(change - timedelta(minutes=30), tick=False)
    dose_mg = Decimal(str(session.patient.weight_kg)) * Decimal(
        str(session.rules.dose["default_mg_per_kg"])
    )
    services.dose_record(
        session=session,
        acting_user=nurse,
        lot=lot,
        dose_mg=dose_mg,
        volume_ml=dose_mg / lot.concentration_mg_per_ml,
        started_at=timezone.now(),
        prescriber=psychiatrist,
    )
    session.refresh_from_db()
    start = session.dose_started_at

    stored = [
        (c.code, None if c.due_at is None else (c.due_at - start).total_seconds() / 60)
        for c in session.checks.order_by("due_at", "id")
    ]
    assert sorted(stored, key=str) == sorted(elapsed_plan(session.rules, PLAIN_DAY), key=str)

    time_machine.move_to(start + timedelta(minutes=90), tick=False)
    infusion = session.rules.dose["infusion_minutes"]
    services.dose_complete(
        session=session, acting_user=nurse, ended_at=start + timedelta(minutes=infusion)
    )
    session.refresh_from_db()

    assert observation_ends_at(session) - session.dose_ended_at == timedelta(
        minutes=session.rules.minimum_observation_minutes
    )
    client.force_login(nurse)
    html = client.get(reverse("monitoring:floor")).content.decode()
    assert "<td>90 min</td>" in html


def test_a_dose_entered_on_the_form_across_the_spring_change_plans_real_minutes(
    request, client, time_machine
):
    session = dose_at_the_change(request, time_machine, SPRING_FORWARD)
    nurse, psychiatrist, lot = (
        request.getfixturevalue(n) for n in ("nurse", "psychiatrist", "ketamine_lot")
    )
    start = SPRING_FORWARD - timedelta(minutes=40)  # 00:20 GMT, a valid wall-clock time
    dose_mg = Decimal(str(session.patient.weight_kg)) * Decimal(
        str(session.rules.dose["default_mg_per_kg"])
    )
    client.force_login(nurse)

    response = client.post(
        reverse("monitoring:dose_new", args=[session.pk]),
        {
            "lot": lot.pk,
            "dose_mg": str(dose_mg),
            "volume_ml": str(dose_mg / lot.concentration_mg_per_ml),
            "started_at": start.astimezone(LONDON).strftime("%Y-%m-%dT%H:%M"),
            "prescriber": psychiatrist.pk,
        },
    )

    assert response.status_code == 302
    session.refresh_from_db()
    assert session.dose_started_at == start
    stored = [
        (c.code, None if c.due_at is None else (c.due_at - start).total_seconds() / 60)
        for c in session.checks.all()
    ]
    assert sorted(stored, key=str) == sorted(elapsed_plan(session.rules, PLAIN_DAY), key=str)
