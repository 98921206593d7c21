"""A protocol version's rules, as data (SPEC §G1, §D).

The rules are stored as JSON on ProtocolVersion, validated by the declarative schema in
`protocols.schema` (pydantic models, also published as a JSON Schema) and parsed here into frozen
dataclasses, so that services evaluate typed values and a malformed rule set is refused when it
is saved, not when a nurse is chairside. Every clinical number lives in the data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

import pydantic
from django.core.exceptions import ValidationError

from protocols import schema
from protocols.schema import (
    ALERT_LEVELS,
    ANCHORS,
    INSTRUMENTS,
    ROLES,
    SEVERITIES,
    VITAL_FIELDS,
    AlertRuleDoc,
    RulesDocument,
)

__all__ = [
    "ALERT_LEVELS",
    "ANCHORS",
    "INSTRUMENTS",
    "OPERATORS",
    "ROLES",
    "SEVERITIES",
    "VITAL_FIELDS",
    "AlertRule",
    "Contraindication",
    "FollowUpRule",
    "Limit",
    "ProtocolRules",
    "RuleProblem",
    "ScheduledCheck",
    "parse_rules",
    "rule_problems",
    "rules_json_schema",
]

OPERATORS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
}
NOT_AN_OBJECT = "The rules must be a JSON object."


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
    """`field op value` raises an alert of `level` (SPEC §M5).

    With `over_baseline`, the value compared is the rise over the pre-dose baseline. With the
    persistence pair, the rule holds only on two consecutive valid matching readings at least
    `persistence_min_gap_minutes` and at most `persistence_window_minutes` apart. With
    `repeat_check_minutes`, the alert asks for a repeat reading: a required check falls due that
    many minutes after the reading.
    """

    level: str
    field: str
    op: str
    value: Decimal
    message: str
    over_baseline: bool = False
    persistence_min_gap_minutes: int | None = None
    persistence_window_minutes: int | None = None
    repeat_check_minutes: int | None = None

    @property
    def is_persistent(self) -> bool:
        return self.persistence_window_minutes is not None

    def matches(self, value: Decimal | int | float | None) -> bool:
        if value is None:
            return False
        return OPERATORS[self.op](Decimal(str(value)), self.value)


@dataclass(frozen=True)
class ScheduledCheck:
    code: str
    label: str
    measures: tuple[str, ...]  # vital fields, or ("cadss",)
    anchor: str
    offset_minutes: int
    window_minutes: int
    repeat_every_minutes: int | None = None
    repeat_until: str | None = None  # an anchor
    # Minutes before the due time a reading still counts; None: the same as window_minutes.
    window_before_minutes: int | None = None
    # Met only by readings measured strictly before the dose started (SPEC §M6).
    before_dose: bool = False


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
    # Owed for every session (the REMS form, the next-day call): a later session's plan does not
    # replace it, and an overdue one is never superseded (SPEC §F1a).
    per_session: bool = False
    # "discharge" or "course_start": cadence from the course start (SPEC §F1a).
    anchor: str = "discharge"
    # Completing it records a blood pressure taken in person (the GP physical check).
    requires_bp_in_person: bool = False


@dataclass(frozen=True, kw_only=True)
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
    # Plain dicts (validated, every default filled in): `rules.dose["route"]`.
    dose: dict[str, Any]
    schedule: tuple[ScheduledCheck, ...]
    minimum_observation_minutes: int
    observation_anchor: str
    discharge: dict[str, Any]
    followups: tuple[FollowUpRule, ...]
    escalation: tuple[dict[str, Any], ...]
    late_entry_minutes: int = 10
    rems_form_due_days: int = 7
    rems_bp_check_code: str | None = None
    minimum_age_years: int | None = None

    def contraindication(self, code: str) -> Contraindication | None:
        return next((c for c in self.contraindications if c.code == code), None)

    def check(self, code: str) -> ScheduledCheck | None:
        return next((c for c in self.schedule if c.code == code), None)


# --- Validation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleProblem:
    """One refusal: `path` names the faulty part (`schedule[2].repeat_every_minutes`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


_TYPE_MESSAGES = {
    "int_type": "give a whole number",
    "int_parsing": "give a whole number",
    "int_from_float": "give a whole number",
    "bool_type": "give true or false",
    "bool_parsing": "give true or false",
    "string_type": "give text",
    "list_type": "give a list",
    "tuple_type": "give a list",
    "dict_type": "expected an object",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "number_type": "give a number",
}
_VALUE_MESSAGES = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "must be a code: lower-case letters, digits and _, from a letter",
    "too_short": "give at least {min_length} item(s)",
    "too_long": "give at most {max_length} item(s)",
}
# What a code names, by the key (or list) that holds it: "unknown anchor 'lunch'".
_CODE_NOUNS = {
    "field": "measurement",
    "measures": "measurement",
    "predose_required_fields": "measurement",
    "op": "operator",
    "anchor": "anchor",
    "repeat_until": "anchor",
    "observation_anchor": "anchor",
    "instruments": "instrument",
    "required_instruments": "instrument",
    "consent_kinds": "consent kind",
    "routes": "route",
    "route": "route",
}
# A tagged union adds its tag to the error location: `dose.iv.x` is `dose.x` to the reader.
_UNION_TAGS = {("dose",): set(schema.ROUTES)}


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    if part.startswith("["):
        return f"{path}{part}"
    return f"{path}.{part}" if path else part


def _path(loc: list) -> str:
    path = ""
    for part in loc:
        path = _join(path, part)
    return path or "rules"


def _problem(error: dict) -> RuleProblem:
    """One pydantic error in the words of the editor: "path: message".

    A missing, unknown or mistyped key is reported on the object that holds it and names the
    key ("alerts[2]: 'value' is missing."); anything else on the faulty part itself
    ("schedule[2].repeat_every_minutes: must be greater than 0").
    """
    kind, ctx = error["type"], error.get("ctx") or {}
    loc = list(error["loc"])
    for prefix, tags in _UNION_TAGS.items():
        at = len(prefix)
        if tuple(loc[:at]) == prefix and len(loc) > at and loc[at] in tags:
            del loc[at]
    keyed = bool(loc) and isinstance(loc[-1], str)
    if kind == "missing" and keyed:
        key = loc.pop()
        return RuleProblem(_path(loc), f"'{key}' is missing.")
    if kind == "extra_forbidden" and keyed:
        key = loc.pop()
        if loc == ["plausibility"]:
            return RuleProblem(_path(loc), f"unknown measurement '{key}'.")
        return RuleProblem(_path(loc), f"unknown keys: '{key}'.")
    if kind in _TYPE_MESSAGES and keyed:
        key = loc.pop()
        return RuleProblem(_path(loc), f"'{key}' has the wrong type: {_TYPE_MESSAGES[kind]}.")
    if kind in _TYPE_MESSAGES:
        return RuleProblem(_path(loc), f"wrong type: {_TYPE_MESSAGES[kind]}.")
    if kind == "union_tag_invalid":
        key = ctx.get("discriminator", "").strip("'")
        return RuleProblem(
            _path([*loc, key]),
            f"unknown {_CODE_NOUNS.get(key, key)} {ctx.get('tag')!r}; "
            f"expected {ctx.get('expected_tags')}.",
        )
    if kind == "union_tag_not_found":
        return RuleProblem(
            _path(loc), f"'{ctx.get('discriminator', '').strip(chr(39))}' is missing."
        )
    if kind == "literal_error":
        holder = next((part for part in reversed(loc) if isinstance(part, str)), "")
        noun = _CODE_NOUNS.get(holder, holder.replace("_", " ") or "value")
        return RuleProblem(
            _path(loc), f"unknown {noun} {error.get('input')!r}; expected {ctx.get('expected')}."
        )
    if kind in _VALUE_MESSAGES:
        return RuleProblem(_path(loc), _VALUE_MESSAGES[kind].format(**ctx))
    path = _path(loc) if loc else ""
    if ctx.get("at"):
        path = _join(path, ctx["at"])
    return RuleProblem(path or "rules", error["msg"].removeprefix("Value error, "))


def _problems(error: pydantic.ValidationError) -> list[RuleProblem]:
    problems: list[RuleProblem] = []
    for problem in map(_problem, error.errors(include_url=False)):
        # Several unknown keys of one object: one problem naming them all.
        last = problems[-1] if problems else None
        if (
            last is not None
            and last.path == problem.path
            and last.message.startswith("unknown keys: ")
            and problem.message.startswith("unknown keys: ")
        ):
            keys = (
                last.message.removesuffix(".")
                + ", "
                + problem.message.removeprefix("unknown keys: ")
            )
            problems[-1] = RuleProblem(last.path, keys)
        else:
            problems.append(problem)
    return problems


def _document(data: Any) -> tuple[RulesDocument | None, list[RuleProblem]]:
    if not isinstance(data, dict):
        return None, [RuleProblem("rules", NOT_AN_OBJECT)]
    try:
        return RulesDocument.model_validate(data), []
    except pydantic.ValidationError as error:
        return None, _problems(error)
    except RecursionError:
        return None, [RuleProblem("rules", "the document is nested too deeply.")]


def rule_problems(data: Any) -> list[RuleProblem]:
    """Every problem of a rules document, each with the path of its faulty part; [] if valid."""
    return _document(data)[1]


def parse_rules(data: Any) -> ProtocolRules:
    """Validate and parse a rules document; raises ValidationError whose messages each read
    "path: message" (`schedule[2].repeat_every_minutes: must be greater than 0`)."""
    doc, problems = _document(data)
    if problems:
        if problems == [RuleProblem("rules", NOT_AN_OBJECT)]:
            raise ValidationError(NOT_AN_OBJECT)
        raise ValidationError([str(problem) for problem in problems])
    return ProtocolRules(
        drug=doc.drug,
        routes=tuple(doc.routes),
        consent_kinds=tuple(doc.consent_kinds),
        assessment_validity_days=doc.assessment_validity_days,
        required_instruments=tuple(doc.required_instruments),
        contraindications=tuple(
            Contraindication(code=c.code, label=c.label, severity=c.severity)
            for c in doc.contraindications
        ),
        plausibility={
            name: _limit(getattr(doc.plausibility, name))
            for name in type(doc.plausibility).model_fields
        },
        fahrenheit_hint=_limit(doc.fahrenheit_hint),
        alerts=tuple(_alert(a) for a in doc.alerts),
        predose_alerts=tuple(_alert(a) for a in doc.predose_alerts),
        dose=doc.dose.model_dump(),
        schedule=tuple(
            ScheduledCheck(**{**check.model_dump(), "measures": tuple(check.measures)})
            for check in doc.schedule
        ),
        minimum_observation_minutes=doc.minimum_observation_minutes,
        observation_anchor=doc.observation_anchor,
        discharge=doc.discharge.model_dump(),
        followups=tuple(
            FollowUpRule(**{**rule.model_dump(), "instruments": tuple(rule.instruments)})
            for rule in doc.followups
        ),
        escalation=tuple(step.model_dump() for step in doc.escalation),
        late_entry_minutes=doc.late_entry_minutes,
        rems_form_due_days=doc.rems_form_due_days,
        rems_bp_check_code=doc.rems_bp_check_code,
        minimum_age_years=doc.minimum_age_years,
    )


def _limit(pair: list) -> Limit:
    low, high = pair
    return Limit(Decimal(str(low)), Decimal(str(high)))


def _alert(doc: AlertRuleDoc) -> AlertRule:
    gap, window = doc.persistence or (None, None)
    return AlertRule(
        level=doc.level,
        field=doc.field,
        op=doc.op,
        value=Decimal(str(doc.value)),
        message=doc.message,
        over_baseline=doc.over_baseline,
        persistence_min_gap_minutes=gap,
        persistence_window_minutes=window,
        repeat_check_minutes=doc.repeat_check_minutes,
    )


@cache
def _json_schema() -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **RulesDocument.model_json_schema(),
    }


def rules_json_schema() -> dict:
    """The JSON Schema of a rules document, generated from the models that validate it."""
    return copy.deepcopy(_json_schema())
