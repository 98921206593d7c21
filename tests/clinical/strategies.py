"""Hypothesis strategies for protocol rule documents (SPEC §G1, §D).

`rule_documents()` draws documents the rule schema must accept: one of the shipped version-2
documents with its schedule, windows, repeats, alert values, plausibility limits, dose, discharge
scoring and follow-ups redrawn within what a clinic may decide. `malformed_documents()` breaks a
valid document in one of the ways the schema must refuse, and says where the refusal must point.

Shared: the rule-schema tests use both; plan_checks / evaluator termination properties can reuse
`rule_documents()` (every accepted document plans a finite schedule).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache

from hypothesis import strategies as st

from protocols import defaults
from protocols.schema import (
    ANCHOR_ORDER,
    CONSENT_KINDS,
    INSTRUMENTS,
    MAX_SESSION_MINUTES,
    PHYSICAL,
    PHYSICAL_RISE,
    ROLES,
    VITAL_FIELDS,
)

SHIPPED = {"iv": defaults.IV_KETAMINE, "intranasal": defaults.ESKETAMINE_REMS}
DOSE_ANCHOR = {"iv": "dose_start", "intranasal": "first_device"}
# The anchors a dose provides, in time order (the discharge last).
ROUTE_ANCHORS = {
    "iv": ("dose_start", "infusion_end", "discharge"),
    "intranasal": ("first_device", "discharge"),
}
UPWARD, DOWNWARD = (">=", ">"), ("<=", "<")


# --- Parts ----------------------------------------------------------------------------------------


@cache
def physical_values(field: str) -> st.SearchStrategy:
    """A value inside the field's physical bounds: a whole number, or one with one decimal."""
    low, high = PHYSICAL[field]
    return st.integers(low * 10, high * 10).map(lambda v: v // 10 if v % 10 == 0 else v / 10)


@cache
def limits(field: str) -> st.SearchStrategy:
    return st.tuples(physical_values(field), physical_values(field)).map(sorted)


def plausibility() -> st.SearchStrategy:
    return st.fixed_dictionaries({field: limits(field) for field in PHYSICAL})


@st.composite
def measures(draw) -> list[str]:
    if draw(st.booleans()) and draw(st.booleans()):
        return ["cadss"]
    chosen = draw(st.sets(st.sampled_from(VITAL_FIELDS), min_size=1))
    return [field for field in VITAL_FIELDS if field in chosen]


@st.composite
def scheduled_check(draw, code: str, route: str) -> dict:
    """One required check of any accepted kind: before the dose, once, repeating, at discharge."""
    anchors = ROUTE_ANCHORS[route]
    during = anchors[:-1]  # not the discharge
    kind = draw(st.sampled_from(["before_dose", "once", "repeat", "discharge"]))
    check = {"code": code, "label": f"Check {code}", "measures": draw(measures())}
    if kind == "before_dose":
        return {
            **check,
            "anchor": DOSE_ANCHOR[route],
            "offset_minutes": 0,
            "before_dose": True,
            "window_minutes": 0,
            "window_before_minutes": draw(st.integers(1, 60)),
        }
    if kind == "discharge":
        return {
            **check,
            "anchor": "discharge",
            "offset_minutes": 0,
            "window_minutes": draw(st.integers(1, 60)),
        }
    anchor = draw(st.sampled_from(during))
    window = draw(st.integers(0, 60))
    offset = draw(st.integers(0, MAX_SESSION_MINUTES - window))
    check.update(anchor=anchor, offset_minutes=offset, window_minutes=window)
    before = draw(st.none() | st.integers(0, 60))
    if before is not None:
        check["window_before_minutes"] = before
    if window + (window if before is None else before) == 0:
        check["window_minutes"] = 1  # a window has a positive width
        check["offset_minutes"] = min(offset, MAX_SESSION_MINUTES - 1)
    if kind == "repeat":
        check["repeat_every_minutes"] = draw(st.integers(1, 120))
        check["repeat_until"] = draw(
            st.sampled_from([a for a in anchors if ANCHOR_ORDER[a] >= ANCHOR_ORDER[anchor]])
        )
    return check


@st.composite
def schedules(draw, route: str) -> list[dict]:
    count = draw(st.integers(0, 6))
    return [draw(scheduled_check(f"c{i:02d}", route)) for i in range(count)]


@st.composite
def alert_rule(draw) -> dict:
    field = draw(st.sampled_from(VITAL_FIELDS))
    over_baseline = field in ("sbp", "dbp", "hr") and draw(st.booleans())
    if over_baseline:
        op = draw(st.sampled_from(UPWARD))
        value = draw(st.integers(*PHYSICAL_RISE))
    else:
        op = draw(st.sampled_from([*UPWARD, *DOWNWARD, "=="]))
        value = draw(physical_values(field))
    rule = {
        "level": draw(st.sampled_from(["warning", "critical"])),
        "field": field,
        "op": op,
        "value": value,
        "message": f"{field} {op} {value}",
    }
    if over_baseline:
        rule["over_baseline"] = True
    if draw(st.integers(0, 3)) == 0:
        gap = draw(st.integers(0, 30))
        rule["persistence_min_gap_minutes"] = gap
        rule["persistence_window_minutes"] = draw(st.integers(max(gap, 1), 120))
    if draw(st.integers(0, 3)) == 0:
        rule["repeat_check_minutes"] = draw(st.integers(1, 30))
    return rule


def _single_reading(rule: dict) -> bool:
    return "persistence_window_minutes" not in rule and rule["op"] != "=="


def no_warning_beyond_critical(alerts: list[dict]) -> list[dict]:
    """Pull every single-reading warning back to the mildest critical of its field, direction
    and baseline, so that no warning is more extreme than a critical (SPEC §M5)."""
    for warning in alerts:
        if warning["level"] != "warning" or not _single_reading(warning):
            continue
        upward = warning["op"] in UPWARD
        criticals = [
            c["value"]
            for c in alerts
            if c["level"] == "critical"
            and _single_reading(c)
            and c["field"] == warning["field"]
            and c.get("over_baseline", False) == warning.get("over_baseline", False)
            and (c["op"] in UPWARD) == upward
        ]
        if criticals:
            bound = min(criticals) if upward else max(criticals)
            beyond = warning["value"] > bound if upward else warning["value"] < bound
            if beyond:
                warning["value"] = bound
    return alerts


def alert_lists(max_size: int = 8) -> st.SearchStrategy:
    return st.lists(alert_rule(), max_size=max_size).map(no_warning_beyond_critical)


@st.composite
def followup_rule(draw, code: str) -> dict:
    anchor = draw(st.sampled_from(["discharge", "course_start"]))
    rule = {
        "code": code,
        "label": f"Follow-up {code}",
        "offset_hours": draw(st.integers(0, 24 * 90)),
        "window_hours": draw(st.integers(1, 24 * 14)),
        "role": draw(st.sampled_from(ROLES)),
        "anchor": anchor,
    }
    instruments = draw(st.sets(st.sampled_from(INSTRUMENTS)))
    if instruments:
        rule["instruments"] = sorted(instruments)
    if draw(st.booleans()):
        rule["repeat_every_days"] = draw(st.integers(1, 60))
        rule["repeat_count"] = draw(st.integers(1, 12))
    for flag in ("signed_by_psychiatrist", "on_course_completion", "requires_bp_in_person"):
        if draw(st.booleans()):
            rule[flag] = True
    if anchor == "discharge" and draw(st.booleans()):
        rule["per_session"] = True
    return rule


@st.composite
def followups(draw) -> list[dict]:
    count = draw(st.integers(0, 4))
    return [draw(followup_rule(f"f{i:02d}")) for i in range(count)]


@st.composite
def escalation(draw) -> list[dict]:
    hours = sorted(draw(st.sets(st.integers(1, 24 * 30), max_size=3)))
    return [{"overdue_hours": h, "role": draw(st.sampled_from(ROLES))} for h in hours]


@st.composite
def discharge(draw) -> dict:
    spo2_two = draw(st.integers(0, 100))
    bp_two = draw(st.integers(0, 100))
    moaas_two = draw(st.integers(0, 5))
    return {
        "aldrete_min": draw(st.integers(0, 10)),
        "moaas_required": draw(st.integers(0, 5)),
        "escort_required": draw(st.booleans()),
        "no_driving_instruction": draw(st.booleans()),
        "prescriber_decision_required": draw(st.booleans()),
        "nurse_may_discharge": draw(st.booleans()),
        "aldrete_spo2_two_points_above": spo2_two,
        "aldrete_spo2_one_point_from": draw(st.integers(0, spo2_two)),
        "aldrete_bp_two_points_within_percent": bp_two,
        "aldrete_bp_one_point_within_percent": draw(st.integers(bp_two, 100)),
        "aldrete_moaas_two_points": moaas_two,
        "aldrete_moaas_one_point_from": draw(st.integers(0, moaas_two)),
    }


@st.composite
def dose(draw, route: str) -> dict:
    common = {
        "weight_max_age_days": draw(st.integers(1, 365)),
        "predose_vitals_max_age_minutes": draw(st.integers(1, 120)),
        "predose_required_fields": sorted(draw(st.sets(st.sampled_from(VITAL_FIELDS), min_size=1))),
    }
    if route == "iv":
        low = draw(st.sampled_from([0.1, 0.25, 0.5, 0.75, 1]))
        high = draw(st.sampled_from([h for h in (0.5, 1.0, 1.5, 2) if h >= low]))
        return {
            "route": "iv",
            "default_mg_per_kg": draw(
                st.sampled_from([v for v in (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2) if low <= v <= high])
            ),
            "allowed_mg_per_kg": [low, high],
            "infusion_minutes": draw(st.integers(1, 240)),
            **common,
        }
    device = draw(st.sampled_from([14, 28, 56]))
    low = device * draw(st.integers(1, 3))
    return {
        "route": "intranasal",
        "device_mg": device,
        "allowed_mg": [low, low + device * draw(st.integers(0, 3))],
        "device_interval_minutes": draw(st.integers(0, 15)),
        **common,
    }


@st.composite
def rule_documents(draw, route: str | None = None) -> dict:
    """A rules document the schema must accept (SPEC §G1): every part redrawn within bounds."""
    route = route or draw(st.sampled_from(sorted(SHIPPED)))
    document = copy.deepcopy(SHIPPED[route])
    schedule = draw(schedules(route))
    document.update(
        consent_kinds=sorted(draw(st.sets(st.sampled_from(CONSENT_KINDS), min_size=1))),
        plausibility=draw(plausibility()),
        alerts=draw(alert_lists()),
        predose_alerts=draw(alert_lists(max_size=3)),
        dose=draw(dose(route)),
        schedule=schedule,
        minimum_observation_minutes=draw(st.integers(1, 360)),
        observation_anchor=draw(st.sampled_from(ROUTE_ANCHORS[route][:-1])),
        discharge=draw(discharge()),
        followups=draw(followups()),
        escalation=draw(escalation()),
        late_entry_minutes=draw(st.integers(1, 60)),
        rems_form_due_days=draw(st.integers(1, 30)),
    )
    rems_candidates = [
        c["code"]
        for c in schedule
        if {"sbp", "dbp"} <= set(c["measures"]) and "repeat_every_minutes" not in c
    ]
    document["rems_bp_check_code"] = draw(st.sampled_from([None, *rems_candidates]))
    return document


# --- Malformed documents --------------------------------------------------------------------------


@dataclass(frozen=True)
class Malformed:
    """A broken document, the path its refusal must start with, and a word the message holds."""

    document: dict
    path: str
    needle: str
    kind: str


def _pick(draw, items: list) -> int:
    return draw(st.integers(0, len(items) - 1))


def _with_check(draw, document: dict, route: str, kind: str | None = None) -> int:
    """The index of a schedule check (appending one of `kind` if needed)."""
    schedule = document["schedule"]
    if kind is None and schedule:
        return _pick(draw, schedule)
    for i, check in enumerate(schedule):
        if kind == "discharge" and check["anchor"] == "discharge":
            return i
    check = draw(scheduled_check("zz", route).filter(lambda c: c["anchor"] != "discharge"))
    if kind == "discharge":
        check.update(anchor="discharge", offset_minutes=0, window_minutes=15)
        for key in ("repeat_every_minutes", "repeat_until", "window_before_minutes", "before_dose"):
            check.pop(key, None)
    schedule.append(check)
    return len(schedule) - 1


def _with_followup(draw, document: dict) -> int:
    if not document["followups"]:
        document["followups"].append(draw(followup_rule("zz")))
    return _pick(draw, document["followups"])


def _with_alert(draw, document: dict) -> int:
    if not document["alerts"]:
        document["alerts"].append(draw(alert_rule()))
    return _pick(draw, document["alerts"])


TEXT_OR_FLAG = st.sampled_from(["10", "ten", "", "1e3", True, False, None, [5], {"n": 5}])


@st.composite
def malformed_documents(draw) -> Malformed:
    """A valid document broken in one way the schema must refuse (SPEC §G1, §M4–M6, §F1)."""
    route = draw(st.sampled_from(sorted(SHIPPED)))
    doc = draw(rule_documents(route))
    kind = draw(
        st.sampled_from(
            [
                "text-for-a-number",
                "zero-or-negative-repeat",
                "offset-outside-the-session",
                "window-without-its-anchor",
                "threshold-out-of-range",
                "warning-beyond-critical",
                "unknown-code",
                "unknown-key",
                "persistence-window-below-gap",
                "repeat-without-end",
            ]
        )
    )
    if kind == "text-for-a-number":
        where = draw(st.sampled_from(["top", "check", "followup", "alert", "dose", "limit"]))
        bad = draw(TEXT_OR_FLAG)
        if where == "top":
            key = draw(
                st.sampled_from(
                    [
                        "minimum_observation_minutes",
                        "assessment_validity_days",
                        "late_entry_minutes",
                    ]
                )
            )
            doc[key] = bad
            return Malformed(doc, "rules", key, kind)
        if where == "check":
            i = _with_check(draw, doc, route)
            key = draw(st.sampled_from(["offset_minutes", "window_minutes"]))
            doc["schedule"][i][key] = bad
            return Malformed(doc, f"schedule[{i}]", key, kind)
        if where == "followup":
            i = _with_followup(draw, doc)
            key = draw(st.sampled_from(["offset_hours", "window_hours", "repeat_count"]))
            doc["followups"][i][key] = bad
            return Malformed(doc, f"followups[{i}]", key, kind)
        if where == "alert":
            i = _with_alert(draw, doc)
            doc["alerts"][i]["value"] = bad
            return Malformed(doc, f"alerts[{i}]", "value", kind)
        if where == "dose":
            key = "infusion_minutes" if route == "iv" else "device_interval_minutes"
            doc["dose"][key] = bad
            return Malformed(doc, "dose", key, kind)
        field = draw(st.sampled_from(sorted(PHYSICAL)))
        doc["plausibility"][field][draw(st.integers(0, 1))] = bad
        return Malformed(doc, f"plausibility.{field}", "give", kind)
    if kind == "zero-or-negative-repeat":
        bad = draw(st.integers(-1000, 0))
        where = draw(st.sampled_from(["check", "followup-days", "followup-count", "device"]))
        if where == "check":
            i = _with_check(draw, doc, route)
            doc["schedule"][i]["repeat_every_minutes"] = bad
            return Malformed(doc, f"schedule[{i}].repeat_every_minutes", "greater than 0", kind)
        if where == "device" and route == "intranasal":
            doc["dose"]["device_interval_minutes"] = draw(st.integers(-1000, -1))
            return Malformed(doc, "dose.device_interval_minutes", "at least 0", kind)
        i = _with_followup(draw, doc)
        if where == "followup-count":
            doc["followups"][i]["repeat_count"] = bad
            return Malformed(doc, f"followups[{i}].repeat_count", "at least 1", kind)
        doc["followups"][i]["repeat_every_days"] = bad
        return Malformed(doc, f"followups[{i}].repeat_every_days", "greater than 0", kind)
    if kind == "offset-outside-the-session":
        where = draw(st.sampled_from(["negative", "too-late", "after-discharge"]))
        if where == "after-discharge":
            i = _with_check(draw, doc, route, "discharge")
            doc["schedule"][i]["offset_minutes"] = draw(st.integers(1, 120))
            return Malformed(doc, f"schedule[{i}].offset_minutes", "discharge", kind)
        i = _with_check(draw, doc, route)
        if where == "negative":
            doc["schedule"][i]["offset_minutes"] = draw(st.integers(-1000, -1))
            return Malformed(doc, f"schedule[{i}].offset_minutes", "at least 0", kind)
        doc["schedule"][i]["offset_minutes"] = draw(st.integers(MAX_SESSION_MINUTES + 1, 10**6))
        return Malformed(doc, f"schedule[{i}].offset_minutes", "at most", kind)
    if kind == "window-without-its-anchor":
        where = draw(st.sampled_from(["no-width", "before-dose-after", "discharge-no-lookback"]))
        if where == "discharge-no-lookback":
            i = _with_check(draw, doc, route, "discharge")
            doc["schedule"][i]["window_minutes"] = 0
            return Malformed(doc, f"schedule[{i}].window_minutes", "above 0", kind)
        i = _with_check(draw, doc, route)
        check = doc["schedule"][i]
        if where == "before-dose-after":
            for key in ("repeat_every_minutes", "repeat_until"):
                check.pop(key, None)
            check.update(
                anchor=DOSE_ANCHOR[route],
                offset_minutes=0,
                before_dose=True,
                window_before_minutes=draw(st.integers(1, 60)),
                window_minutes=draw(st.integers(1, 60)),
            )
            return Malformed(doc, f"schedule[{i}].window_minutes", "ends at the dose", kind)
        check.pop("before_dose", None)
        if check["anchor"] == "discharge":
            check["anchor"] = DOSE_ANCHOR[route]
        check.update(window_minutes=0, window_before_minutes=0)
        return Malformed(doc, f"schedule[{i}].window_minutes", "width", kind)
    if kind == "threshold-out-of-range":
        where = draw(st.sampled_from(["limit", "alert", "rise"]))
        if where == "limit":
            field = draw(st.sampled_from(sorted(PHYSICAL)))
            low, high = PHYSICAL[field]
            if draw(st.booleans()):
                doc["plausibility"][field] = [low - draw(st.integers(1, 100)), high]
            else:
                doc["plausibility"][field] = [low, high + draw(st.integers(1, 100))]
            return Malformed(doc, f"plausibility.{field}", "within", kind)
        i = _with_alert(draw, doc)
        alert = doc["alerts"][i]
        if where == "rise":
            alert.update(field="sbp", op=">", over_baseline=True)
            alert["value"] = draw(st.integers(PHYSICAL_RISE[1] + 1, 10**4))
        else:
            alert.pop("over_baseline", None)
            low, high = PHYSICAL[alert["field"]]
            alert["value"] = draw(
                st.integers(high + 1, high + 10**4) | st.integers(low - 10**4, low - 1)
            )
        return Malformed(doc, f"alerts[{i}].value", "within", kind)
    if kind == "warning-beyond-critical":
        field = draw(st.sampled_from(["sbp", "dbp", "hr", "rr", "spo2"]))
        low, high = PHYSICAL[field]
        upward = draw(st.booleans())
        critical = draw(st.integers(low + 1, high - 1))
        warning = (
            draw(st.integers(critical + 1, high))
            if upward
            else draw(st.integers(low, critical - 1))
        )
        op = ">=" if upward else "<"
        doc["alerts"] += [
            {"level": "critical", "field": field, "op": op, "value": critical, "message": "c"},
            {"level": "warning", "field": field, "op": op, "value": warning, "message": "w"},
        ]
        return Malformed(doc, "alerts[", "more extreme", kind)
    if kind == "unknown-code":
        where = draw(
            st.sampled_from(
                [
                    "alert-field",
                    "alert-op",
                    "alert-level",
                    "check-anchor",
                    "check-measure",
                    "followup-role",
                    "followup-instrument",
                    "followup-anchor",
                    "consent-kind",
                    "route",
                    "instrument",
                ]
            )
        )
        code = draw(st.sampled_from(["lunch", "bp", "Janitor", "phq8", "map", "=>", "oral"]))
        if where.startswith("alert"):
            i = _with_alert(draw, doc)
            key = where.removeprefix("alert-")
            doc["alerts"][i][key] = code
            return Malformed(doc, f"alerts[{i}].{key}", "unknown", kind)
        if where.startswith("check"):
            i = _with_check(draw, doc, route)
            if where == "check-anchor":
                doc["schedule"][i]["anchor"] = code
                return Malformed(doc, f"schedule[{i}].anchor", "unknown anchor", kind)
            doc["schedule"][i]["measures"] = [code]
            return Malformed(doc, f"schedule[{i}].measures[0]", "unknown measurement", kind)
        if where.startswith("followup"):
            i = _with_followup(draw, doc)
            if where == "followup-instrument":
                doc["followups"][i]["instruments"] = [code]
                return Malformed(doc, f"followups[{i}].instruments[0]", "unknown", kind)
            key = where.removeprefix("followup-")
            doc["followups"][i][key] = code
            return Malformed(doc, f"followups[{i}].{key}", "unknown", kind)
        if where == "consent-kind":
            doc["consent_kinds"] = [code]
            return Malformed(doc, "consent_kinds[0]", "unknown consent kind", kind)
        if where == "route":
            doc["dose"]["route"] = code
            return Malformed(doc, "dose.route", "unknown route", kind)
        doc["required_instruments"] = [code]
        return Malformed(doc, "required_instruments[0]", "unknown instrument", kind)
    if kind == "unknown-key":
        key = draw(st.sampled_from(["colour", "repeat_every", "window", "max_mg", "notes"]))
        where = draw(st.sampled_from(["rules", "check", "alert", "followup", "dose", "discharge"]))
        if where == "rules":
            doc[key] = 1
            return Malformed(doc, "rules", key, kind)
        if where == "check":
            i = _with_check(draw, doc, route)
            doc["schedule"][i][key] = 1
            return Malformed(doc, f"schedule[{i}]", key, kind)
        if where == "alert":
            i = _with_alert(draw, doc)
            doc["alerts"][i][key] = 1
            return Malformed(doc, f"alerts[{i}]", key, kind)
        if where == "followup":
            i = _with_followup(draw, doc)
            doc["followups"][i][key] = 1
            return Malformed(doc, f"followups[{i}]", key, kind)
        doc[where][key] = 1
        return Malformed(doc, where, key, kind)
    if kind == "persistence-window-below-gap":
        i = _with_alert(draw, doc)
        gap = draw(st.integers(2, 60))
        doc["alerts"][i].pop("over_baseline", None)
        doc["alerts"][i].update(
            persistence_min_gap_minutes=gap,
            persistence_window_minutes=draw(st.integers(1, gap - 1)),
        )
        return Malformed(doc, f"alerts[{i}].persistence_window_minutes", "at least", kind)
    # repeat-without-end
    i = _with_check(draw, doc, route)
    check = doc["schedule"][i]
    check.pop("before_dose", None)
    if check["anchor"] == "discharge":
        check["anchor"] = DOSE_ANCHOR[route]
        check["window_minutes"] = max(check["window_minutes"], 1)
    check.pop("repeat_until", None)
    check["repeat_every_minutes"] = draw(st.integers(1, 60))
    return Malformed(doc, f"schedule[{i}].repeat", "repeat", kind)
