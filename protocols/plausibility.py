"""Plausibility of measured values against a protocol version's limits (SPEC §M4, §N5).

Its own module so that every step can judge a value by the same rule without importing the
Step 1 services: Step 2 readings, Step 3 follow-up blood pressures and Step 1 baselines all call
`plausibility_errors`. The limits are data (`rules.plausibility`); this module holds none.
"""

from __future__ import annotations

from typing import Any

from protocols.rules import ProtocolRules

PLAUSIBILITY = "Enter a value between {low} and {high}."
DBP_NOT_BELOW_SBP = "Diastolic pressure must be below systolic."


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
