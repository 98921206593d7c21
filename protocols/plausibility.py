"""Plausibility of measured values against a protocol version's limits (SPEC §M4, §N5).

Its own module so that every step can judge a value by the same rule without importing the
Step 1 services: Step 2 readings, Step 3 follow-up blood pressures and Step 1 baselines all call
`plausibility_errors`. The limits are data (`rules.plausibility`); this module holds none.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from protocols.rules import ProtocolRules

PLAUSIBILITY = "Enter a value between {low} and {high}."
DBP_NOT_BELOW_SBP = "Diastolic pressure must be below systolic."
NOT_A_WHOLE_NUMBER = "Enter a whole number."


def whole_number(value: Any) -> int | None:
    """`value` as an int when it is a whole number, as a form's IntegerField takes it (SPEC
    §N5), else None: 120, 120.0, "120" and "120.0" are 120; 120.5, "120.5", True, NaN and
    "high" are not whole numbers. Never truncated."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        # As IntegerField reads text: digits, with at most a ".0" tail ("1e2" is not a number).
        match = re.fullmatch(r"\s*([+-]?\d+)(?:\.0*)?\s*", value)
        return int(match.group(1)) if match else None
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    if number.is_finite() and number == number.to_integral_value():
        return int(number)
    return None


def plausibility_errors(rules: ProtocolRules, values: dict[str, Any]) -> dict[str, str]:
    """Field errors for values outside the protocol version's plausibility limits (§M4)."""
    errors = {}
    for field, limit in rules.plausibility.items():
        value = values.get(field)
        if value is not None and not limit.contains(value):
            errors[field] = PLAUSIBILITY.format(low=limit.low, high=limit.high)
    sbp, dbp = values.get("sbp"), values.get("dbp")
    if sbp is not None and dbp is not None and "sbp" not in errors and dbp >= sbp:
        errors.setdefault("dbp", DBP_NOT_BELOW_SBP)
    return errors
