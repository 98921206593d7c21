"""The shape of a protocol version's rules document, declared once (SPEC §G1, §D, §M4–M6).

These pydantic models describe the JSON an administrator publishes. They refuse every malformed
document with the path of the faulty part, and the JSON Schema served to the protocol editor is
generated from them, so the schema and the validation cannot disagree. `protocols.rules` turns a
validated document into the frozen objects the services evaluate.

What is refused, besides wrong types (text or true/false where a number belongs), unknown keys
and unknown codes (instrument, vital field, role, anchor, route, consent kind):

- limits outside the physical bounds of their measurement (PHYSICAL) or with low above high;
- alert values outside their measurement's physical bounds (a rise over the baseline: 0–200);
  a warning more extreme than a critical alert of the same measurement and direction;
- checks outside the session: negative offsets, anything past MAX_SESSION_MINUTES, an offset
  after the discharge, a repeat that never advances (repeat_every_minutes 0) or has no end;
- windows: every window has a positive width and contains its due time. A before-dose check's
  window ends at the dose (window_minutes 0, window_before_minutes > 0, offset 0); a check at
  the discharge looks back from it (window_minutes > 0) and cannot repeat;
- anchors the dose cannot provide ("infusion_end" without an IV infusion, "first_device" without
  intranasal devices), since a check anchored there would silently never be planned.

The defaults below fill keys that documents published before the key existed do not carry; the
shipped documents state every one of them explicitly.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from clinic.models import Role
from patients.models import ConsentKind

# --- Codes ----------------------------------------------------------------------------------------

VITAL_FIELDS = ("sbp", "dbp", "hr", "rr", "spo2", "temperature_c", "moaas")
INSTRUMENTS = ("phq9", "gad7", "cssrs", "moca", "madrs", "cadss")
ANCHORS = ("dose_start", "infusion_end", "first_device", "discharge")
ROLES = tuple(Role.values)
CONSENT_KINDS = tuple(ConsentKind.values)
ROUTES = ("iv", "im", "intranasal")
DRUGS = ("ketamine", "esketamine")
SEVERITIES = ("absolute", "relative")
ALERT_LEVELS = ("warning", "critical")
OPERATORS = (">=", ">", "<=", "<", "==")
UPWARD, DOWNWARD = (">=", ">"), ("<=", "<")
FOLLOWUP_ANCHORS = ("discharge", "course_start")
OBSERVATION_ANCHORS = ("dose_start", "infusion_end", "first_device")

VitalField = Literal[VITAL_FIELDS]
Measure = Literal[(*VITAL_FIELDS, "cadss")]
Instrument = Literal[INSTRUMENTS]
Anchor = Literal[ANCHORS]
RoleName = Literal[ROLES]
ConsentKindCode = Literal[CONSENT_KINDS]
Route = Literal[ROUTES]
# dose_start and first_device are the same moment (the dose start); the infusion ends after it.
ANCHOR_ORDER = {"dose_start": 0, "first_device": 0, "infusion_end": 1, "discharge": 2}

# What a measurement can physically be, whatever a clinic decides: plausibility limits and alert
# values must lie inside (SPEC §M4 limits are clinic policy *within* these).
PHYSICAL = {
    "sbp": (0, 400),
    "dbp": (0, 300),
    "hr": (0, 400),
    "rr": (0, 150),
    "spo2": (0, 100),
    "temperature_c": (20, 50),
    "moaas": (0, 5),
    "weight_kg": (1, 1000),
}
# A rise over the pre-dose baseline (over_baseline rules).
PHYSICAL_RISE = (0, 200)
PHYSICAL_MG_PER_KG = (0.01, 10)
PHYSICAL_DEVICE_MG = (1, 1000)
# °F readings a °C field may receive by mistake: the °F image of temperature_c's bounds.
PHYSICAL_FAHRENHEIT = (68, 122)
# Structural bounds, not clinical policy: a session (check-in to discharge) lasts at most
# 12 hours, so every offset, window and repeat fits in it and a plan is always finite.
MAX_SESSION_MINUTES = 720
MAX_FOLLOWUP_HOURS = 24 * 366
MAX_REPEATS = 52

# The SPEC §M5 default persistence window: documents published before the persistence keys
# existed ("repeat_within_minutes") are read with it.
LEGACY_PERSISTENCE_WINDOW_MINUTES = 15

# The pre-dose set SPEC §G3 names: BP systolic and diastolic, HR, SpO2.
DEFAULT_PREDOSE_FIELDS = ("sbp", "dbp", "hr", "spo2")

_TEXT_CODE = r"^[a-z][a-z0-9_]*$"

# --- Leaf types -----------------------------------------------------------------------------------


def _number(value: Any) -> int | float:
    """A JSON number: never text, never true/false, never NaN or infinity."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError("number_type", "must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("number_type", "must be a finite number")
    return value


Number = Annotated[float, PlainValidator(_number), WithJsonSchema({"type": "number"})]


def _int(low: int | None, high: int, *, gt: int | None = None) -> Any:
    """A whole number within bounds: never text, true/false or 5.0."""
    return Annotated[int, Strict(), Field(ge=low, gt=gt, le=high)]


Minutes = _int(0, MAX_SESSION_MINUTES)
PositiveMinutes = _int(None, MAX_SESSION_MINUTES, gt=0)
Days = _int(None, 3650, gt=0)
FollowUpHours = _int(0, MAX_FOLLOWUP_HOURS)
PositiveHours = _int(None, MAX_FOLLOWUP_HOURS, gt=0)
RepeatDays = _int(None, 366, gt=0)
Percent = _int(0, 100)
Moaas = _int(0, 5)
AldreteScore = _int(0, 10)
RepeatCount = _int(1, MAX_REPEATS)
Age = _int(0, 120)
Text = Annotated[str, Strict(), Field(min_length=1, max_length=500)]
Code = Annotated[str, Strict(), Field(min_length=1, max_length=40, pattern=_TEXT_CODE)]
Flag = Annotated[bool, Strict()]


def _pair_shape(value: Any) -> Any:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise PydanticCustomError("pair", "give [low, high]")
    if any(isinstance(item, bool) or not isinstance(item, (int, float)) for item in value):
        raise PydanticCustomError("pair", "give numbers: [low, high]")
    return list(value)


def _low_not_above_high(value: list) -> list:
    if value[0] > value[1]:
        raise PydanticCustomError("low_above_high", "low is above high.")
    return value


Pair = Annotated[
    list[Number],
    BeforeValidator(_pair_shape),
    AfterValidator(_low_not_above_high),
    Field(min_length=2, max_length=2, description="[low, high], inclusive"),
]


def _unique(value: list) -> list:
    seen = set()
    for item in value:
        if item in seen:
            raise PydanticCustomError("duplicate", "'{item}' is listed twice", {"item": item})
        seen.add(item)
    return value


def _rule_error(message: str, at: str | None = None, **ctx: Any) -> PydanticCustomError:
    """A cross-field refusal; `at` names the key (below the model's own path) at fault."""
    return PydanticCustomError("rule", message, {**ctx, **({"at": at} if at else {})})


def _within(value: list | int | float, bounds: tuple, what: str, at: str | None = None) -> None:
    values = value if isinstance(value, list) else [value]
    low, high = bounds
    if any(not low <= v <= high for v in values):
        raise _rule_error("{what} must lie within {low}–{high}", at, what=what, low=low, high=high)


class _Document(BaseModel):
    """Unknown keys are refused everywhere: a misspelt key must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- Parts ----------------------------------------------------------------------------------------


class ContraindicationDoc(_Document):
    code: Code
    label: Text
    severity: Literal[SEVERITIES]


class PlausibilityDoc(_Document):
    """Readings outside are refused with a field error (SPEC §M4); within PHYSICAL bounds."""

    sbp: Pair
    dbp: Pair
    hr: Pair
    rr: Pair
    spo2: Pair
    temperature_c: Pair
    moaas: Pair
    weight_kg: Pair

    @field_validator("*")
    @classmethod
    def _physical(cls, value: list, info) -> list:
        _within(value, PHYSICAL[info.field_name], "limits")
        return value


class AlertRuleDoc(_Document):
    """`field op value` raises an alert of `level` (SPEC §M5)."""

    level: Literal[ALERT_LEVELS]
    field: VitalField
    op: Literal[OPERATORS]
    value: Number
    message: Text
    over_baseline: Flag = Field(
        False, description="Compare the rise over the pre-dose baseline (0–200)."
    )
    persistence_min_gap_minutes: Minutes | None = Field(
        None,
        description="Holds only on two consecutive valid matching readings at least this far "
        "apart…",
    )
    persistence_window_minutes: PositiveMinutes | None = Field(
        None, description="…and at most this far apart (at least the gap)."
    )
    repeat_check_minutes: PositiveMinutes | None = Field(
        None,
        description="Ask for a repeat reading: a required check due this many minutes after "
        "the reading.",
    )
    repeat_within_minutes: Minutes | None = Field(
        None,
        json_schema_extra={"deprecated": True},
        description="Legacy: read as persistence_min_gap_minutes with a "
        f"{LEGACY_PERSISTENCE_WINDOW_MINUTES}-minute window.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AlertRuleDoc:
        if self.over_baseline:
            if self.op not in UPWARD:
                raise _rule_error("a rise over the baseline is compared with > or >=", "op")
            _within(self.value, PHYSICAL_RISE, "a rise over the baseline", "value")
        else:
            _within(self.value, PHYSICAL[self.field], f"{self.field} values", "value")
        gap, window = self.persistence_min_gap_minutes, self.persistence_window_minutes
        if self.repeat_within_minutes is not None and (gap is not None or window is not None):
            raise _rule_error(
                "give either repeat_within_minutes (legacy) or the persistence_* keys",
                "repeat_within_minutes",
            )
        if (gap is None) != (window is None):
            raise _rule_error(
                "give persistence_min_gap_minutes and persistence_window_minutes together",
                "persistence_window_minutes" if window is None else "persistence_min_gap_minutes",
            )
        if gap is not None and window < gap:
            raise _rule_error(
                "the persistence window must be at least the minimum gap",
                "persistence_window_minutes",
            )
        return self

    @property
    def persistence(self) -> tuple[int, int] | None:
        """(minimum gap, window) in minutes, the legacy key read with the SPEC default window."""
        if self.repeat_within_minutes is not None:
            gap = self.repeat_within_minutes
            return gap, max(gap, LEGACY_PERSISTENCE_WINDOW_MINUTES)
        if self.persistence_min_gap_minutes is None:
            return None
        return self.persistence_min_gap_minutes, self.persistence_window_minutes


def _warnings_not_beyond_criticals(alerts: list[AlertRuleDoc]) -> None:
    """A warning must not be more extreme than a critical alert on the same measurement and
    direction (e.g. warning SBP ≥ 180 with critical SBP ≥ 170): the warning would never show.
    Only single-reading rules are compared: a two-readings critical is a different condition."""
    for i, warning in enumerate(alerts):
        if warning.level != "warning" or warning.persistence or warning.op == "==":
            continue
        upward = warning.op in UPWARD
        for critical in alerts:
            if (
                critical.level != "critical"
                or critical.persistence
                or critical.field != warning.field
                or critical.over_baseline != warning.over_baseline
                or critical.op == "=="
                or (critical.op in UPWARD) != upward
            ):
                continue
            beyond = warning.value > critical.value if upward else warning.value < critical.value
            if beyond:
                raise PydanticCustomError(
                    "rule",
                    "warning {field} {op} {value} is more extreme than the critical "
                    "{field} {cop} {cvalue}",
                    {
                        "at": f"[{i}].value",
                        "field": warning.field,
                        "op": warning.op,
                        "value": warning.value,
                        "cop": critical.op,
                        "cvalue": critical.value,
                    },
                )


def _check_alerts(alerts: list[AlertRuleDoc]) -> list[AlertRuleDoc]:
    _warnings_not_beyond_criticals(alerts)
    return alerts


Alerts = Annotated[list[AlertRuleDoc], Field(max_length=100), AfterValidator(_check_alerts)]
PredoseFields = Annotated[list[VitalField], Field(min_length=1), AfterValidator(_unique)]


class _DoseCommon(_Document):
    weight_max_age_days: Days
    # SPEC §G3: a complete pre-dose set within the last 30 minutes.
    predose_vitals_max_age_minutes: PositiveMinutes = 30
    predose_required_fields: PredoseFields = Field(
        default_factory=lambda: list(DEFAULT_PREDOSE_FIELDS),
        description="The vitals a complete pre-dose set holds (SPEC §G3).",
    )


class IvDoseDoc(_DoseCommon):
    """IV infusion in mg/kg (SPEC §M2): outside allowed_mg_per_kg needs a prescriber override."""

    route: Literal["iv"]
    default_mg_per_kg: Number
    allowed_mg_per_kg: Pair
    infusion_minutes: PositiveMinutes

    @model_validator(mode="after")
    def _consistent(self) -> IvDoseDoc:
        _within(self.allowed_mg_per_kg, PHYSICAL_MG_PER_KG, "doses", "allowed_mg_per_kg")
        low, high = self.allowed_mg_per_kg
        if not low <= self.default_mg_per_kg <= high:
            raise _rule_error(
                "the default dose must lie within the allowed range", "default_mg_per_kg"
            )
        return self


class IntranasalDoseDoc(_DoseCommon):
    """Intranasal devices (SPEC §M2): device_mg each, device_interval_minutes apart."""

    route: Literal["intranasal"]
    device_mg: Number
    allowed_mg: Pair
    device_interval_minutes: Minutes

    @model_validator(mode="after")
    def _consistent(self) -> IntranasalDoseDoc:
        _within(self.device_mg, PHYSICAL_DEVICE_MG, "a device", "device_mg")
        if self.allowed_mg[0] < self.device_mg:
            raise _rule_error("the smallest allowed dose is at least one device", "allowed_mg")
        return self


Dose = Annotated[IvDoseDoc | IntranasalDoseDoc, Field(discriminator="route")]


class ScheduledCheckDoc(_Document):
    """A required check (SPEC §M6): due at anchor + offset, met by a reading inside its window
    [due − window_before_minutes, due + window_minutes]; repeating checks recur until an anchor."""

    code: Code
    label: Text
    measures: Annotated[list[Measure], Field(min_length=1), AfterValidator(_unique)]
    anchor: Anchor
    offset_minutes: Minutes
    window_minutes: Minutes
    repeat_every_minutes: PositiveMinutes | None = None
    repeat_until: Anchor | None = None
    window_before_minutes: Minutes | None = Field(
        None, description="Minutes before the due time a reading still counts (default: window)."
    )
    before_dose: Flag = Field(
        False, description="Met only by readings measured strictly before the dose started."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ScheduledCheckDoc:
        if "cadss" in self.measures and len(self.measures) > 1:
            raise _rule_error("a CADSS check measures CADSS alone", "measures")
        if (self.repeat_until is None) != (self.repeat_every_minutes is None):
            raise _rule_error(
                "repeat_until only with repeat_every_minutes, and a repeat needs an end",
                "repeat_until" if self.repeat_until is not None else "repeat_every_minutes",
            )
        if self.repeat_until is not None and (
            ANCHOR_ORDER[self.repeat_until] < ANCHOR_ORDER[self.anchor]
        ):
            raise _rule_error("a repeat ends at or after its anchor", "repeat_until")
        before = (
            self.window_before_minutes
            if self.window_before_minutes is not None
            else self.window_minutes
        )
        if self.before_dose:
            if self.anchor not in ("dose_start", "first_device"):
                raise _rule_error("a before-dose check is anchored at the dose", "anchor")
            if self.offset_minutes or self.repeat_every_minutes is not None:
                raise _rule_error(
                    "a before-dose check is due at the dose and does not repeat",
                    "offset_minutes" if self.offset_minutes else "repeat_every_minutes",
                )
            if self.window_minutes:
                raise _rule_error(
                    "a before-dose check's window ends at the dose: window_minutes is 0",
                    "window_minutes",
                )
            if not self.window_before_minutes:
                raise _rule_error(
                    "a before-dose check needs window_before_minutes above 0",
                    "window_before_minutes",
                )
        elif self.anchor == "discharge":
            if self.offset_minutes:
                raise _rule_error(
                    "nothing is due after the discharge: offset is 0", "offset_minutes"
                )
            if self.repeat_every_minutes is not None:
                raise _rule_error("a check at the discharge cannot repeat", "repeat_every_minutes")
            if not self.window_minutes:
                raise _rule_error(
                    "a check at the discharge looks back window_minutes: above 0",
                    "window_minutes",
                )
            if self.window_before_minutes is not None:
                raise _rule_error(
                    "a check at the discharge looks back window_minutes; leave this out",
                    "window_before_minutes",
                )
        elif before + self.window_minutes == 0:
            raise _rule_error(
                "the window has no width: give window_minutes above 0", "window_minutes"
            )
        if self.offset_minutes + self.window_minutes > MAX_SESSION_MINUTES:
            raise _rule_error(
                "the check falls outside the session ({max} minutes)",
                "offset_minutes",
                max=MAX_SESSION_MINUTES,
            )
        return self


class DischargeDoc(_Document):
    """Discharge criteria (SPEC §M9), including how the modified Aldrete items are scored."""

    aldrete_min: AldreteScore
    moaas_required: Moaas
    escort_required: Flag
    no_driving_instruction: Flag
    prescriber_decision_required: Flag
    nurse_may_discharge: Flag
    # Modified Aldrete (SPEC §M9): SpO2 > 92 % on room air scores 2, from 90 % scores 1.
    aldrete_spo2_two_points_above: Percent = 92
    aldrete_spo2_one_point_from: Percent = 90
    # BP within 20 % of the baseline scores 2, within 50 % scores 1.
    aldrete_bp_two_points_within_percent: Percent = 20
    aldrete_bp_one_point_within_percent: Percent = 50
    # Consciousness from the MOAA/S: 5 (fully awake) scores 2, from 3 (arousable) scores 1.
    aldrete_moaas_two_points: Moaas = 5
    aldrete_moaas_one_point_from: Moaas = 3

    @model_validator(mode="after")
    def _ordered(self) -> DischargeDoc:
        if self.aldrete_spo2_one_point_from > self.aldrete_spo2_two_points_above:
            raise _rule_error(
                "the one-point SpO2 starts below the two-point SpO2",
                "aldrete_spo2_one_point_from",
            )
        if self.aldrete_bp_one_point_within_percent < self.aldrete_bp_two_points_within_percent:
            raise _rule_error(
                "the one-point BP band is at least as wide as the two-point band",
                "aldrete_bp_one_point_within_percent",
            )
        if self.aldrete_moaas_one_point_from > self.aldrete_moaas_two_points:
            raise _rule_error(
                "the one-point MOAA/S starts below the two-point MOAA/S",
                "aldrete_moaas_one_point_from",
            )
        return self


class FollowUpRuleDoc(_Document):
    """A follow-up (SPEC §F1): due offset_hours after its anchor, open for window_hours."""

    code: Code
    label: Text
    offset_hours: FollowUpHours
    window_hours: PositiveHours
    role: RoleName
    instruments: Annotated[list[Instrument], AfterValidator(_unique)] = Field(default_factory=list)
    signed_by_psychiatrist: Flag = False
    repeat_every_days: RepeatDays | None = None
    repeat_count: RepeatCount = 1
    on_course_completion: Flag = False
    per_session: Flag = Field(
        False,
        description="Owed for every session: a later session's plan never replaces it, and an "
        "overdue one is never superseded.",
    )
    anchor: Literal[FOLLOWUP_ANCHORS] = Field(
        "discharge", description="Keep the cadence from the course start (SPEC §F1a)."
    )
    requires_bp_in_person: Flag = Field(
        False, description="Completing it records a blood pressure taken in person."
    )

    @model_validator(mode="after")
    def _consistent(self) -> FollowUpRuleDoc:
        if self.repeat_count > 1 and self.repeat_every_days is None:
            raise _rule_error("repeat_count above 1 needs repeat_every_days", "repeat_every_days")
        if self.per_session and self.anchor == "course_start":
            raise _rule_error(
                "a follow-up owed per session is counted from its discharge, not the course start",
                "anchor",
            )
        return self


class EscalationStepDoc(_Document):
    overdue_hours: PositiveHours
    role: RoleName


def _escalation_in_order(steps: list[EscalationStepDoc]) -> list[EscalationStepDoc]:
    for i in range(1, len(steps)):
        if steps[i].overdue_hours <= steps[i - 1].overdue_hours:
            raise PydanticCustomError(
                "rule",
                "escalation steps are listed by increasing overdue_hours",
                {"at": f"[{i}].overdue_hours"},
            )
    return steps


def _codes_unique(items: list, what: str) -> list:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.code in seen:
            raise PydanticCustomError(
                "rule",
                "{what} code '{code}' is used twice",
                {"at": f"[{i}].code", "what": what, "code": item.code},
            )
        seen[item.code] = i
    return items


def _followup_codes(items: list[FollowUpRuleDoc]) -> list[FollowUpRuleDoc]:
    _codes_unique(items, "follow-up")
    # Open follow-ups of a kind are found by their code prefix ("induction_scales-2").
    for i, item in enumerate(items):
        for other in items:
            if other is not item and other.code.startswith(item.code):
                raise PydanticCustomError(
                    "rule",
                    "follow-up code '{code}' is the beginning of '{other}'",
                    {"at": f"[{i}].code", "code": item.code, "other": other.code},
                )
    return items


_MISSING_ANCHOR = {
    "iv": ("first_device", "an intranasal dose"),
    "intranasal": ("infusion_end", "an IV infusion"),
}


class RulesDocument(_Document):
    """The rules of one protocol version (SPEC §G1, §D). Thresholds change by publishing a new
    protocol version; a published version never changes."""

    model_config = ConfigDict(title="Vigil protocol rules")

    drug: Literal[DRUGS]
    routes: Annotated[list[Route], Field(min_length=1), AfterValidator(_unique)]
    consent_kinds: Annotated[list[ConsentKindCode], Field(min_length=1), AfterValidator(_unique)]
    assessment_validity_days: Days
    required_instruments: Annotated[list[Instrument], AfterValidator(_unique)]
    contraindications: Annotated[
        list[ContraindicationDoc],
        Field(max_length=100),
        AfterValidator(lambda items: _codes_unique(items, "contraindication")),
    ]
    plausibility: PlausibilityDoc
    fahrenheit_hint: Pair
    alerts: Alerts
    predose_alerts: Alerts
    dose: Dose
    schedule: Annotated[
        list[ScheduledCheckDoc],
        Field(max_length=50),
        AfterValidator(lambda items: _codes_unique(items, "check")),
    ]
    minimum_observation_minutes: PositiveMinutes
    observation_anchor: Literal[OBSERVATION_ANCHORS]
    discharge: DischargeDoc
    followups: Annotated[
        list[FollowUpRuleDoc], Field(max_length=50), AfterValidator(_followup_codes)
    ]
    escalation: Annotated[
        list[EscalationStepDoc], Field(max_length=10), AfterValidator(_escalation_in_order)
    ]
    # SPEC §M3: readings entered more than this after they were measured are marked late.
    late_entry_minutes: PositiveMinutes = 10
    # SPEC §F6: the REMS patient monitoring form is due within this many days of each session.
    rems_form_due_days: RepeatDays = 7
    rems_bp_check_code: Code | None = Field(
        None,
        description="The schedule check whose reading is the REMS form's BP at 40 minutes.",
    )
    minimum_age_years: Age | None = Field(
        None, description="Younger patients need a prescriber's override reason (SPEC §A4)."
    )

    @field_validator("fahrenheit_hint")
    @classmethod
    def _fahrenheit(cls, value: list) -> list:
        _within(value, PHYSICAL_FAHRENHEIT, "°F hints")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RulesDocument:
        route = self.dose.route
        if route not in self.routes:
            raise _rule_error(
                "the dose route '{route}' is not in routes", "dose.route", route=route
            )
        # The anchor this dose never provides: a check anchored there would never be planned.
        unavailable, needs = _MISSING_ANCHOR[route]
        wrong = [("observation_anchor", self.observation_anchor)] + [
            (f"schedule[{i}].{key}", getattr(check, key))
            for i, check in enumerate(self.schedule)
            for key in ("anchor", "repeat_until")
        ]
        for at, anchor in wrong:
            if anchor == unavailable:
                raise _rule_error("'{anchor}' needs {needs}", at, anchor=anchor, needs=needs)
        if self.rems_bp_check_code is not None:
            check = next((c for c in self.schedule if c.code == self.rems_bp_check_code), None)
            if check is None:
                raise _rule_error(
                    "'{code}' is not the code of a schedule check",
                    "rems_bp_check_code",
                    code=self.rems_bp_check_code,
                )
            if check.repeat_every_minutes is not None or not {"sbp", "dbp"} <= set(check.measures):
                raise _rule_error(
                    "the REMS BP check measures sbp and dbp once",
                    "rems_bp_check_code",
                )
        return self
