"""Pure rule evaluation for Step 2: alerts on a reading, the check schedule, elapsed times.

No database writes here: services call these with rows they loaded. Every number comes from
the session's protocol version (ProtocolRules).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from protocols.rules import VITAL_FIELDS, AlertRule, ProtocolRules, ScheduledCheck

FAHRENHEIT_HINT = "Did you enter °F? Enter the temperature in °C."


@dataclass(frozen=True)
class RaisedAlert:
    level: str
    field: str
    message: str
    # Minutes within which the rule asks for a repeat reading (a timed required check).
    repeat_check_minutes: int | None = None


def _value(reading, field: str):
    return getattr(reading, field, None)


def _order(reading) -> tuple:
    return (reading.measured_at, getattr(reading, "pk", None) or 0)


def _neighbours(reading, others: Iterable, field: str) -> list:
    """The valid readings holding `field` just before and just after `reading` (SPEC §M5:
    "two consecutive valid readings"); a reading without the field does not break a run."""
    key = _order(reading)
    holding = [
        o
        for o in others
        if o is not reading
        and (getattr(o, "pk", None) is None or getattr(o, "pk", None) != getattr(reading, "pk", 0))
        and _value(o, field) is not None
        and getattr(o, "entered_in_error_at", None) is None
    ]
    before = [o for o in holding if _order(o) < key]
    after = [o for o in holding if _order(o) > key]
    found = []
    if before:
        found.append(max(before, key=_order))
    if after:
        found.append(min(after, key=_order))
    return found


def _persists(rule: AlertRule, reading, others: Iterable) -> bool:
    """The rule matched on a consecutive reading at least `min gap` and at most `window`
    minutes away (SPEC §M5: default 5 and 15 minutes, so the 10-minute IV schedule reaches it)."""
    gap = timedelta(minutes=rule.persistence_min_gap_minutes or 0)
    window = timedelta(minutes=rule.persistence_window_minutes)
    for other in _neighbours(reading, others, rule.field):
        apart = abs(reading.measured_at - other.measured_at)
        if gap <= apart <= window and rule.matches(_value(other, rule.field)):
            return True
    return False


def evaluate_reading(
    *,
    rules: Iterable[AlertRule],
    reading,
    baseline=None,
    earlier: Iterable = (),
) -> list[RaisedAlert]:
    """Alerts raised by `reading` (SPEC §M5).

    `baseline` holds the patient's pre-dose values (for rise-over-baseline rules): any object
    with the vital fields as attributes, each from the latest valid pre-dose reading that holds
    it (`baseline_values`). `earlier` are the session's other valid readings around this one
    (for the two-consecutive-readings rules).
    """
    earlier = list(earlier)
    raised: list[RaisedAlert] = []
    for rule in rules:
        value = _value(reading, rule.field)
        if value is None:
            continue
        if rule.over_baseline:
            base = _value(baseline, rule.field) if baseline is not None else None
            if base is None or not rule.matches(Decimal(value) - Decimal(base)):
                continue
        elif not rule.matches(value):
            continue
        if rule.persistence_window_minutes is not None and not _persists(rule, reading, earlier):
            continue
        raised.append(RaisedAlert(rule.level, rule.field, rule.message, rule.repeat_check_minutes))
    # A critical alert on a field supersedes the warnings on the same field.
    critical_fields = {a.field for a in raised if a.level == "critical"}
    return [a for a in raised if a.level == "critical" or a.field not in critical_fields]


@dataclass(frozen=True)
class Baseline:
    """Per-field pre-dose baseline values (SPEC §M5): a SpO2-only reading is never a BP
    baseline; each field comes from the latest valid pre-dose reading that holds it."""

    sbp: int | None = None
    dbp: int | None = None
    hr: int | None = None
    rr: int | None = None
    spo2: int | None = None
    temperature_c: Decimal | None = None
    moaas: int | None = None


def baseline_values(predose_readings: Iterable) -> Baseline:
    """The baseline from a session's pre-dose readings (any order, invalid ones ignored)."""
    latest = sorted(
        (r for r in predose_readings if getattr(r, "entered_in_error_at", None) is None),
        key=_order,
    )
    values = {}
    for field in VITAL_FIELDS:
        holding = [r for r in latest if _value(r, field) is not None]
        values[field] = _value(holding[-1], field) if holding else None
    return Baseline(**values)


def is_complete_set(reading, required: Iterable[str]) -> bool:
    """A complete pre-dose set as the protocol defines it (SPEC §G3: SBP, DBP, HR, SpO2)."""
    return all(_value(reading, field) is not None for field in required)


def plausibility_problems(rules: ProtocolRules, values: dict) -> dict[str, str]:
    """Field errors for implausible values (SPEC §M4), with the °F hint for temperatures."""
    from protocols.services import plausibility_errors

    errors = plausibility_errors(rules, values)
    temperature = values.get("temperature_c")
    if temperature is not None and rules.fahrenheit_hint.contains(temperature):
        errors["temperature_c"] = FAHRENHEIT_HINT
    return errors


@dataclass(frozen=True)
class PlannedCheck:
    code: str
    label: str
    measures: tuple[str, ...]
    due_at: datetime | None
    window_minutes: int
    window_before_minutes: int
    before_dose: bool = False
    repeat_until: str | None = None  # the anchor a repeated check runs to


# No session runs past a day: the horizon of open-ended repeats ("until discharge") is capped
# there, so planning always terminates with a bounded number of checks whatever the document.
SESSION_HORIZON = timedelta(hours=24)


def anchor_times(
    rules: ProtocolRules,
    *,
    dose_started_at: datetime,
    dose_ended_at: datetime | None = None,
) -> dict[str, datetime | None]:
    """When each schedule anchor falls (UTC arithmetic: DST-safe).

    The infusion end is the *actual* one once recorded (SPEC §M6), else the planned one.
    """
    # Aware datetimes in a zone with DST add minutes as wall-clock time: work in UTC.
    dose_started_at = dose_started_at.astimezone(UTC)
    infusion_minutes = rules.dose.get("infusion_minutes")
    if dose_ended_at is not None and infusion_minutes:
        infusion_end = dose_ended_at.astimezone(UTC)
    elif infusion_minutes:
        infusion_end = dose_started_at + timedelta(minutes=infusion_minutes)
    else:
        infusion_end = None
    anchors = {
        "dose_start": dose_started_at,
        "first_device": dose_started_at,
        "infusion_end": infusion_end,
        "discharge": None,
    }
    observation_from = anchors[rules.observation_anchor] or dose_started_at
    anchors["observation_end"] = observation_from + timedelta(
        minutes=rules.minimum_observation_minutes
    )
    return anchors


def plan_checks(
    rules: ProtocolRules,
    *,
    dose_started_at: datetime,
    dose_ended_at: datetime | None = None,
    until: datetime | None = None,
) -> list[PlannedCheck]:
    """The required checks of the schedule (SPEC §M6, §D), due times materialized.

    Follows what happened: "during" checks run to the actual infusion end and recovery checks
    start from it; checks repeated "until discharge" run to the end of the minimum observation
    or to `until` (now, or the discharge), whichever is later.
    """
    dose_started_at = dose_started_at.astimezone(UTC)
    anchors = anchor_times(rules, dose_started_at=dose_started_at, dose_ended_at=dose_ended_at)
    horizon = anchors["observation_end"]
    if until is not None:
        horizon = max(horizon, until.astimezone(UTC))
    horizon = min(horizon, dose_started_at + SESSION_HORIZON)
    planned: list[PlannedCheck] = []
    for check in rules.schedule:
        planned.extend(_occurrences(check, anchors, horizon))
    return sorted(planned, key=lambda c: (c.due_at is None, c.due_at or dose_started_at, c.code))


def _occurrences(check: ScheduledCheck, anchors: dict, horizon: datetime) -> list[PlannedCheck]:
    anchor = anchors.get(check.anchor)
    before = (
        check.window_before_minutes
        if check.window_before_minutes is not None
        else check.window_minutes
    )
    before_dose = bool(getattr(check, "before_dose", False))

    def planned(code: str, label: str, due: datetime | None) -> PlannedCheck:
        return PlannedCheck(
            code,
            label,
            check.measures,
            due,
            check.window_minutes,
            before,
            before_dose,
            check.repeat_until if check.repeat_every_minutes else None,
        )

    if check.anchor == "discharge" or anchor is None:
        return [planned(check.code, check.label, None)]
    first = anchor + timedelta(minutes=check.offset_minutes)
    if not check.repeat_every_minutes:
        return [planned(check.code, check.label, first)]
    open_ended = check.repeat_until in (None, "discharge")
    until = horizon if open_ended else anchors.get(check.repeat_until)
    if until is not None:
        until = min(until, horizon)
    step = timedelta(minutes=check.repeat_every_minutes)
    due, occurrences, n = first, [], 1
    while until is not None and due <= until:
        occurrences.append(planned(f"{check.code}-{n}", f"{check.label} ({n})", due))
        due, n = due + step, n + 1
    return occurrences


def met_at(check, readings, cadss, *, after=None) -> datetime | None:
    """When a valid reading (or CADSS) inside the check's window first met it, if one did.

    `check` is a RequiredCheck or a PlannedCheck (due_at, windows, measures, before_dose). A
    "before dose" check is met only by readings measured before the dose started; a repeat
    check only by a reading measured after `after`, the one that asked for it (SPEC §M5, §M6).
    """
    low = check.due_at - timedelta(minutes=check.window_before_minutes)
    high = check.due_at + timedelta(minutes=check.window_minutes)
    if list(check.measures) == ["cadss"]:
        times = [o.observed_at for o in cadss if low <= o.observed_at <= high]
    else:
        times = [
            r.measured_at
            for r in readings
            if low <= r.measured_at <= high
            and all(getattr(r, m) is not None for m in check.measures)
            and (not check.before_dose or r.is_predose)
            and (after is None or (r.pk != after.pk and r.measured_at > after.measured_at))
        ]
    return min(times) if times else None


def minutes_between(start: datetime, end: datetime) -> int:
    """Whole minutes elapsed; aware datetimes subtract in UTC, so DST changes do not count."""
    return int((end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() // 60)
