"""Pure rule evaluation for Step 2: alerts on a reading, the check schedule, elapsed times.

No database writes here: services call these with rows they loaded. Every number comes from
the session's protocol version (ProtocolRules).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from protocols.rules import AlertRule, ProtocolRules, ScheduledCheck

FAHRENHEIT_HINT = "Did you enter °F? Enter the temperature in °C."


@dataclass(frozen=True)
class RaisedAlert:
    level: str
    field: str
    message: str


def _value(reading, field: str):
    return getattr(reading, field, None)


def evaluate_reading(
    *,
    rules: Iterable[AlertRule],
    reading,
    baseline=None,
    earlier: Iterable = (),
) -> list[RaisedAlert]:
    """Alerts raised by `reading` (SPEC §M5).

    `baseline` is the patient's pre-dose reading (for rise-over-baseline rules); `earlier` are
    the session's valid readings measured before this one (for two-readings rules).
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
        if rule.repeat_within_minutes is not None:
            window = timedelta(minutes=rule.repeat_within_minutes)
            if not any(
                rule.matches(_value(other, rule.field))
                for other in earlier
                if other is not reading
                and getattr(other, "pk", None) != getattr(reading, "pk", object())
                and abs(reading.measured_at - other.measured_at) <= window
            ):
                continue
        raised.append(RaisedAlert(rule.level, rule.field, rule.message))
    # A critical alert on a field supersedes the warnings on the same field.
    critical_fields = {a.field for a in raised if a.level == "critical"}
    return [a for a in raised if a.level == "critical" or a.field not in critical_fields]


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


def anchor_times(rules: ProtocolRules, *, dose_started_at: datetime) -> dict[str, datetime | None]:
    """When each schedule anchor falls, from the dose start (UTC arithmetic: DST-safe)."""
    # Aware datetimes in a zone with DST add minutes as wall-clock time: work in UTC.
    dose_started_at = dose_started_at.astimezone(UTC)
    infusion_minutes = rules.dose.get("infusion_minutes")
    infusion_end = (
        dose_started_at + timedelta(minutes=infusion_minutes) if infusion_minutes else None
    )
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


def plan_checks(rules: ProtocolRules, *, dose_started_at: datetime) -> list[PlannedCheck]:
    """The required checks of the schedule (SPEC §M6, §D), due times materialized."""
    dose_started_at = dose_started_at.astimezone(UTC)
    anchors = anchor_times(rules, dose_started_at=dose_started_at)
    planned: list[PlannedCheck] = []
    for check in rules.schedule:
        planned.extend(_occurrences(check, anchors))
    return sorted(planned, key=lambda c: (c.due_at is None, c.due_at or dose_started_at))


def _occurrences(check: ScheduledCheck, anchors: dict) -> list[PlannedCheck]:
    anchor = anchors.get(check.anchor)
    before = (
        check.window_before_minutes
        if check.window_before_minutes is not None
        else check.window_minutes
    )
    if check.anchor == "discharge" or anchor is None:
        return [
            PlannedCheck(
                check.code, check.label, check.measures, None, check.window_minutes, before
            )
        ]
    first = anchor + timedelta(minutes=check.offset_minutes)
    if not check.repeat_every_minutes:
        return [
            PlannedCheck(
                check.code, check.label, check.measures, first, check.window_minutes, before
            )
        ]
    until = (
        anchors["observation_end"]
        if check.repeat_until == "discharge"
        else anchors.get(check.repeat_until)
    )
    step = timedelta(minutes=check.repeat_every_minutes)
    due, occurrences, n = first, [], 1
    while until is not None and due <= until:
        occurrences.append(
            PlannedCheck(
                f"{check.code}-{n}",
                f"{check.label} ({n})",
                check.measures,
                due,
                check.window_minutes,
                before,
            )
        )
        due, n = due + step, n + 1
    return occurrences


def minutes_between(start: datetime, end: datetime) -> int:
    """Whole minutes elapsed; aware datetimes subtract in UTC, so DST changes do not count."""
    return int((end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() // 60)
