"""A protocol version's rules, as data (SPEC §G1, §D).

The rules are stored as JSON on ProtocolVersion and parsed here into frozen dataclasses, so that
services evaluate typed values and a malformed rule set is refused when it is saved, not when a
nurse is chairside. Every clinical number lives in the data; this module holds none.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError

SEVERITIES = ("absolute", "relative")
ALERT_LEVELS = ("warning", "critical")
OPERATORS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
}
VITAL_FIELDS = ("sbp", "dbp", "hr", "rr", "spo2", "temperature_c", "moaas")
INSTRUMENTS = ("phq9", "gad7", "cssrs", "moca", "madrs", "cadss")
ANCHORS = ("dose_start", "infusion_end", "first_device", "discharge")
ROLES = ("Nurse", "Psychiatrist", "Anesthesiologist", "General practitioner", "Administrator")


@dataclass(frozen=True)
class Limit:
    """An inclusive plausible range for one measurement."""

    low: Decimal
    high: Decimal

    def contains(self, value: Decimal | int | float) -> bool:
        return self.low <= Decimal(str(value)) <= self.high


@dataclass(frozen=True)
class Contraindication:
    code: str
    label: str
    severity: str  # absolute | relative

    @property
    def is_absolute(self) -> bool:
        return self.severity == "absolute"


@dataclass(frozen=True)
class AlertRule:
    """`field op value` raises an alert of `level`.

    With `over_baseline`, the value compared is the rise over the pre-dose baseline. With
    `repeat_within_minutes`, the rule holds only when two readings that far apart both match.
    """

    level: str
    field: str
    op: str
    value: Decimal
    message: str
    over_baseline: bool = False
    repeat_within_minutes: int | None = None

    def matches(self, value: Decimal | int | float | None) -> bool:
        if value is None:
            return False
        return OPERATORS[self.op](Decimal(str(value)), self.value)


@dataclass(frozen=True)
class ScheduledCheck:
    code: str
    label: str
    measures: tuple[str, ...]  # vital fields or "cadss"
    anchor: str
    offset_minutes: int
    window_minutes: int
    repeat_every_minutes: int | None = None
    repeat_until: str | None = None  # an anchor
    # Minutes before the due time a reading still counts; None: the same as window_minutes.
    window_before_minutes: int | None = None


@dataclass(frozen=True)
class FollowUpRule:
    code: str
    label: str
    offset_hours: int
    window_hours: int
    role: str
    instruments: tuple[str, ...] = ()
    signed_by_psychiatrist: bool = False
    repeat_every_days: int | None = None
    repeat_count: int = 1
    on_course_completion: bool = False
    # Owed for every session (e.g. the REMS form): a later session's plan does not replace it.
    per_session: bool = False


@dataclass(frozen=True)
class ProtocolRules:
    drug: str
    routes: tuple[str, ...]
    consent_kinds: tuple[str, ...]
    assessment_validity_days: int
    required_instruments: tuple[str, ...]
    contraindications: tuple[Contraindication, ...]
    plausibility: dict[str, Limit]
    fahrenheit_hint: Limit
    alerts: tuple[AlertRule, ...]
    predose_alerts: tuple[AlertRule, ...]
    dose: dict[str, Any]
    schedule: tuple[ScheduledCheck, ...]
    minimum_observation_minutes: int
    observation_anchor: str
    discharge: dict[str, Any]
    followups: tuple[FollowUpRule, ...]
    escalation: tuple[dict[str, Any], ...]

    def contraindication(self, code: str) -> Contraindication | None:
        return next((c for c in self.contraindications if c.code == code), None)


def _require(data: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ValidationError(f"{where}: '{key}' is missing.")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValidationError(f"{where}: '{key}' has the wrong type.")
    return value


def _number(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{where}: give numbers.")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ValidationError(f"{where}: give numbers.") from exc


def _limit(value: Any, where: str) -> Limit:
    if not (isinstance(value, list) and len(value) == 2):
        raise ValidationError(f"{where}: give [low, high].")
    low, high = (_number(v, where) for v in value)
    if low > high:
        raise ValidationError(f"{where}: low is above high.")
    return Limit(low, high)


def _alert(data: dict, where: str) -> AlertRule:
    level = _require(data, "level", str, where)
    field = _require(data, "field", str, where)
    op = _require(data, "op", str, where)
    if level not in ALERT_LEVELS or field not in VITAL_FIELDS or op not in OPERATORS:
        raise ValidationError(f"{where}: unknown level, field or operator.")
    return AlertRule(
        level=level,
        field=field,
        op=op,
        value=_number(_require(data, "value", (int, float), where), where),
        message=_require(data, "message", str, where),
        over_baseline=bool(data.get("over_baseline", False)),
        repeat_within_minutes=data.get("repeat_within_minutes"),
    )


def _dataclass(cls, data: dict, where: str, **converters):
    if not isinstance(data, dict):
        raise ValidationError(f"{where}: expected an object.")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValidationError(f"{where}: unknown keys {sorted(unknown)}.")
    values = {}
    for name, value in data.items():
        values[name] = converters[name](value) if name in converters else value
    try:
        return cls(**values)
    except TypeError as exc:
        raise ValidationError(f"{where}: {exc}") from exc


def parse_rules(data: Any) -> ProtocolRules:
    """Validate and parse a rules document; raises ValidationError naming the faulty part."""
    if not isinstance(data, dict):
        raise ValidationError("The rules must be a JSON object.")
    try:
        return _parse(data)
    except (TypeError, AttributeError, ValueError, KeyError) as exc:
        # A part of the wrong shape (a number where a list belongs, a list inside a list...).
        raise ValidationError(f"rules: a part has the wrong shape ({exc}).") from exc


def _parse(data: dict) -> ProtocolRules:
    where = "rules"
    contraindications = tuple(
        _dataclass(Contraindication, item, f"contraindications[{i}]")
        for i, item in enumerate(_require(data, "contraindications", list, where))
    )
    if any(c.severity not in SEVERITIES for c in contraindications):
        raise ValidationError("contraindications: severity is 'absolute' or 'relative'.")
    codes = [c.code for c in contraindications]
    if any(not isinstance(code, str) or not code.strip() for code in codes) or len(
        set(codes)
    ) != len(codes):
        raise ValidationError("contraindications: each code is a unique, non-empty text.")
    plausibility = {
        field: _limit(value, f"plausibility.{field}")
        for field, value in _require(data, "plausibility", dict, where).items()
    }
    if set(plausibility) - set(VITAL_FIELDS) - {"weight_kg"}:
        raise ValidationError("plausibility: unknown measurement.")
    instruments = tuple(_require(data, "required_instruments", list, where))
    if set(instruments) - set(INSTRUMENTS):
        raise ValidationError("required_instruments: unknown instrument.")
    schedule = tuple(
        _dataclass(ScheduledCheck, item, f"schedule[{i}]", measures=tuple)
        for i, item in enumerate(_require(data, "schedule", list, where))
    )
    for i, check in enumerate(schedule):
        if check.anchor not in ANCHORS or (check.repeat_until or "discharge") not in ANCHORS:
            raise ValidationError(f"schedule[{i}]: unknown anchor.")
        if set(check.measures) - {*VITAL_FIELDS, "cadss"}:
            raise ValidationError(f"schedule[{i}]: unknown measurement.")
    followups = tuple(
        _dataclass(FollowUpRule, item, f"followups[{i}]", instruments=tuple)
        for i, item in enumerate(_require(data, "followups", list, where))
    )
    for i, rule in enumerate(followups):
        if rule.role not in ROLES:
            raise ValidationError(f"followups[{i}]: unknown role.")
        if set(rule.instruments) - set(INSTRUMENTS):
            raise ValidationError(f"followups[{i}]: unknown instrument.")
    escalation = tuple(_require(data, "escalation", list, where))
    for i, step in enumerate(escalation):
        if (
            not isinstance(step, dict)
            or step.get("role") not in ROLES
            or isinstance(step.get("overdue_hours"), bool)
            or not isinstance(step.get("overdue_hours"), int)
        ):
            raise ValidationError(f"escalation[{i}]: give overdue_hours and a known role.")
    observation_anchor = _require(data, "observation_anchor", str, where)
    if observation_anchor not in ANCHORS:
        raise ValidationError("observation_anchor: unknown anchor.")
    return ProtocolRules(
        drug=_require(data, "drug", str, where),
        routes=tuple(_require(data, "routes", list, where)),
        consent_kinds=tuple(_require(data, "consent_kinds", list, where)),
        assessment_validity_days=_require(data, "assessment_validity_days", int, where),
        required_instruments=instruments,
        contraindications=contraindications,
        plausibility=plausibility,
        fahrenheit_hint=_limit(_require(data, "fahrenheit_hint", list, where), "fahrenheit_hint"),
        alerts=tuple(
            _alert(a, f"alerts[{i}]") for i, a in enumerate(_require(data, "alerts", list, where))
        ),
        predose_alerts=tuple(
            _alert(a, f"predose_alerts[{i}]")
            for i, a in enumerate(_require(data, "predose_alerts", list, where))
        ),
        dose=_require(data, "dose", dict, where),
        schedule=schedule,
        minimum_observation_minutes=_require(data, "minimum_observation_minutes", int, where),
        observation_anchor=observation_anchor,
        discharge=_require(data, "discharge", dict, where),
        followups=followups,
        escalation=escalation,
    )
