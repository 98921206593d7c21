"""Protocol documents that cannot break anything (SPEC §G1, §D, §M4–M6, §F1; issue 10).

SPEC §G1: "Protocols are versioned data ... each version holds its vitals schedule, plausibility
limits, alert thresholds, minimum observation time, discharge rule, required instruments,
follow-up plan and the consent kinds it requires." A document that would plan an endless or
empty schedule, judge a reading against an impossible threshold or name an unknown role must be
refused when an administrator saves it, with the path of the faulty part, and never reach a
chair. Stored versions stay readable (a course is judged by its own version, §G1).

Written from the SPEC: physical bounds (an SpO2 above 100 %, a heart rate of 500) and the §M5
defaults (two readings at least 5 minutes apart within 15 minutes; repeat within 5 minutes).
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from protocols import defaults
from protocols.models import Protocol, ProtocolVersion
from protocols.rules import AlertRule, parse_rules, rule_problems, rules_json_schema
from protocols.schema import ANCHORS, CONSENT_KINDS, INSTRUMENTS, ROLES, VITAL_FIELDS
from tests.clinical.strategies import Malformed, malformed_documents, rule_documents

V1 = {
    slug: rules
    for slug, _, rules in importlib.import_module(
        "protocols.migrations.0002_default_protocols_roles_guards"
    ).DEFAULT_PROTOCOLS_V1
}
V2 = {slug: rules for slug, _, rules in defaults.DEFAULT_PROTOCOLS}
# "path: message", the path naming the faulty part: rules, dose.route, schedule[2].window_minutes
PATH_MESSAGE = re.compile(r"^[a-z_]+(?:\[\d+\]|\.[a-z_0-9]+)*: \S")

HYPOTHESIS = hypothesis_settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def iv(change: Callable[[dict], None]) -> dict:
    rules = copy.deepcopy(V2["iv-ketamine"])
    change(rules)
    return rules


def esketamine(change: Callable[[dict], None]) -> dict:
    rules = copy.deepcopy(V2["esketamine-rems"])
    change(rules)
    return rules


def refusals(rules: dict) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        parse_rules(rules)
    messages = caught.value.messages
    assert messages and all(PATH_MESSAGE.match(m) for m in messages), messages
    return messages


def alert(rules: dict, level: str, field: str, op: str, value) -> int:
    """The index of the shipped alert `level field op value` (single reading)."""
    return next(
        i
        for i, a in enumerate(rules["alerts"])
        if (a["level"], a["field"], a["op"], a["value"]) == (level, field, op, value)
        and "persistence_window_minutes" not in a
        and not a.get("over_baseline")
    )


def check_index(rules: dict, code: str) -> int:
    return next(i for i, c in enumerate(rules["schedule"]) if c["code"] == code)


def followup_index(rules: dict, code: str) -> int:
    return next(i for i, f in enumerate(rules["followups"]) if f["code"] == code)


# --- §D: the shipped version-2 documents ----------------------------------------------------------


@pytest.mark.parametrize("slug", sorted(V2))
def test_sd_each_shipped_v2_document_parses(slug):
    rules = parse_rules(V2[slug])

    assert rules.late_entry_minutes == 10  # §M3 "late entries (> 10 min) are marked"
    assert rules.dose["predose_required_fields"] == ["sbp", "dbp", "hr", "spo2"]  # §G3


@pytest.mark.parametrize("slug", sorted(V2))
def test_sm5_the_two_readings_criticals_persist_5_minutes_apart_within_15(slug):
    """§M5: "SBP ≥ 180 / DBP ≥ 110 on two consecutive valid readings at least 5 minutes apart
    within the protocol's persistence window (default 15 minutes)"."""
    persistent = [a for a in parse_rules(V2[slug]).alerts if a.is_persistent]

    assert {(a.field, a.op, a.value) for a in persistent} == {
        ("sbp", ">=", 180),
        ("dbp", ">=", 110),
    }
    assert {(a.persistence_min_gap_minutes, a.persistence_window_minutes) for a in persistent} == {
        (5, 15)
    }
    assert all(a.level == "critical" for a in persistent)


@pytest.mark.parametrize("slug", sorted(V2))
def test_sm5_the_180_and_110_warnings_ask_for_a_repeat_reading_in_5_minutes(slug):
    """§M5: "SBP ≥ 180 or DBP ≥ 110 → repeat reading requested within 5 minutes" and "a warning
    that asks for a repeat reading creates a timed required check for it"."""
    rules = parse_rules(V2[slug])
    asking = {
        (a.field, a.value): a.repeat_check_minutes for a in rules.alerts if a.repeat_check_minutes
    }

    assert asking == {("sbp", 180): 5, ("dbp", 110): 5}
    assert all(a.level == "warning" for a in rules.alerts if a.repeat_check_minutes)


@pytest.mark.parametrize(
    ("slug", "code"), [("iv-ketamine", "predose"), ("esketamine-rems", "predose_bp")]
)
def test_sm6_the_predose_check_is_met_only_before_the_dose(slug, code):
    """§M6: "'Before dose' checks are met only by readings measured before the dose started"."""
    check = parse_rules(V2[slug]).check(code)

    assert check.before_dose
    assert (check.window_minutes, check.window_before_minutes) == (0, 30)  # §G3 30 minutes


@pytest.mark.parametrize("slug", sorted(V2))
def test_sf1a_each_session_owes_its_own_next_day_call(slug):
    """§F1a: "An overdue safety call is never superseded by a later session"."""
    (call,) = [f for f in parse_rules(V2[slug]).followups if f.code == "next_day_call"]

    assert call.per_session
    assert call.anchor == "discharge"


def test_sd_esketamine_induction_follow_ups_count_from_the_course_start():
    """§D "PHQ-9/GAD-7 every 2 weeks in induction; end-of-induction review at week 4" and §F1a
    "Reviews tied to a course week ... count from the course start"."""
    rules = parse_rules(V2["esketamine-rems"])
    scales = next(f for f in rules.followups if f.code == "induction_scales")
    review = next(f for f in rules.followups if f.code == "end_of_induction")

    assert (scales.anchor, scales.offset_hours, scales.repeat_every_days, scales.repeat_count) == (
        "course_start",
        14 * 24,
        14,
        2,
    )
    assert (review.anchor, review.offset_hours, review.on_course_completion) == (
        "course_start",
        4 * 7 * 24,
        False,
    )


def test_sd_esketamine_rems_form_is_due_in_7_days_with_the_bp_at_40_minutes():
    """§F6 "REMS monitoring form due within 7 days"; §M11 the form's BP readings."""
    rules = parse_rules(V2["esketamine-rems"])

    assert (rules.rems_form_due_days, rules.rems_bp_check_code) == (7, "bp_40")
    assert rules.check("bp_40").offset_minutes == 40
    assert rules.minimum_age_years == 18  # §A4 label: not approved under 18


def test_sd_the_iv_gp_check_records_a_bp_in_person():
    """§F2 "BP if in person"; §D "GP physical check at 28 days"."""
    rules = parse_rules(V2["iv-ketamine"])

    assert [f.code for f in rules.followups if f.requires_bp_in_person] == ["gp_day28"]


@pytest.mark.parametrize("slug", sorted(V2))
def test_sm9_the_discharge_scoring_is_stated_in_the_document(slug):
    """§M9: "modified Aldrete score ≥ 9 (... BP within 20 % of baseline, ... SpO2 > 92 %)"."""
    discharge = V2[slug]["discharge"]

    assert discharge["aldrete_spo2_two_points_above"] == 92
    assert discharge["aldrete_bp_two_points_within_percent"] == 20
    assert parse_rules(V2[slug]).discharge == discharge


# --- §G1: stored versions stay readable -----------------------------------------------------------


@pytest.mark.parametrize("slug", sorted(V1))
def test_sg1_the_stored_version_1_still_parses_and_maps_the_legacy_repeat_key(slug):
    """§G1: "audits judge each session against its own version": version 1 stays readable; its
    `repeat_within_minutes: 5` reads as a 5-minute gap in the §M5 default 15-minute window."""
    rules = parse_rules(V1[slug])
    persistent = [a for a in rules.alerts if a.is_persistent]

    assert len(persistent) == 2
    assert {(a.persistence_min_gap_minutes, a.persistence_window_minutes) for a in persistent} == {
        (5, 15)
    }
    assert not hasattr(persistent[0], "repeat_within_minutes")
    assert "repeat_within_minutes" not in {f for f in AlertRule.__dataclass_fields__}


@pytest.mark.parametrize("slug", sorted(V1))
def test_sg1_version_1_reads_with_every_default_filled_in(slug):
    rules = parse_rules(V1[slug])

    assert rules.dose["predose_required_fields"] == ["sbp", "dbp", "hr", "spo2"]
    assert rules.discharge["aldrete_spo2_one_point_from"] == 90
    assert rules.discharge["aldrete_moaas_one_point_from"] == 3
    assert (rules.late_entry_minutes, rules.rems_form_due_days) == (10, 7)
    assert not any(c.before_dose for c in rules.schedule)
    assert all(f.anchor == "discharge" for f in rules.followups)


def test_sg1_the_original_version_1_without_later_keys_still_parses():
    """The first revision of version 1 had no pre-dose vitals age: it reads with §G3's 30."""
    original = copy.deepcopy(V1["iv-ketamine"])
    del original["dose"]["predose_vitals_max_age_minutes"]

    assert parse_rules(original).dose["predose_vitals_max_age_minutes"] == 30


def test_sg1_a_legacy_repeat_longer_than_the_default_window_widens_the_window():
    rules = iv(lambda r: None)
    i = alert(rules, "critical", "sbp", ">=", 200)
    rules["alerts"][i]["repeat_within_minutes"] = 20

    parsed = parse_rules(rules).alerts[i]

    assert (parsed.persistence_min_gap_minutes, parsed.persistence_window_minutes) == (20, 20)


@pytest.mark.django_db
@pytest.mark.parametrize("slug", sorted(V2))
def test_sd_migration_publishes_version_2_by_the_service_account_over_an_untouched_v1(slug):
    v1, v2 = ProtocolVersion.objects.filter(protocol__slug=slug).order_by("version")

    assert (v1.version, v2.version) == (1, 2)
    assert v1.rules == V1[slug] and v2.rules == V2[slug]
    assert v2.is_published and v2.published_by == v1.published_by
    assert v2.created_by.username == settings.SERVICE_ACCOUNT_USERNAME
    assert "§M5" in v2.change_summary
    assert ProtocolVersion.objects.published().filter(protocol__slug=slug).latest("version") == v2


def test_sd_no_migration_imports_the_current_defaults():
    """Migrations are frozen: protocols/defaults.py may change, what a migration did may not."""
    for path in (Path(__file__).parents[2] / "protocols" / "migrations").glob("0*.py"):
        assert "protocols.defaults" not in path.read_text(), path.name


# --- Refusals, each naming the faulty part (SPEC §G1, §M4–M6, §F1) --------------------------------

REFUSED = [
    # Text (or true/false) where a number belongs.
    pytest.param(
        iv(lambda r: r["schedule"][1].__setitem__("offset_minutes", "10")),
        "schedule[1]: 'offset_minutes' has the wrong type",
        id="text-for-an-offset",
    ),
    pytest.param(
        iv(lambda r: r["alerts"][0].__setitem__("value", "180")),
        "alerts[0]: 'value' has the wrong type",
        id="text-for-an-alert-value",
    ),
    pytest.param(
        iv(lambda r: r.__setitem__("minimum_observation_minutes", True)),
        "rules: 'minimum_observation_minutes' has the wrong type",
        id="true-for-minutes",
    ),
    pytest.param(
        iv(lambda r: r["dose"].__setitem__("infusion_minutes", 40.0)),
        "dose: 'infusion_minutes' has the wrong type",
        id="fraction-for-whole-minutes",
    ),
    pytest.param(
        iv(lambda r: r["plausibility"].__setitem__("spo2", ["50", 100])),
        "plausibility.spo2: give numbers",
        id="text-in-a-limit",
    ),
    # Negative or zero repeats and intervals.
    pytest.param(
        iv(lambda r: r["schedule"][1].__setitem__("repeat_every_minutes", 0)),
        "schedule[1].repeat_every_minutes: must be greater than 0",
        id="repeat-every-0-minutes",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][2].__setitem__("repeat_every_minutes", -15)),
        "schedule[2].repeat_every_minutes: must be greater than 0",
        id="repeat-every-minus-15-minutes",
    ),
    pytest.param(
        esketamine(lambda r: r["dose"].__setitem__("device_interval_minutes", -5)),
        "dose.device_interval_minutes: must be at least 0",
        id="negative-device-interval",
    ),
    pytest.param(
        esketamine(lambda r: r["followups"][2].__setitem__("repeat_every_days", 0)),
        "followups[2].repeat_every_days: must be greater than 0",
        id="follow-up-every-0-days",
    ),
    pytest.param(
        esketamine(lambda r: r["followups"][2].__setitem__("repeat_count", 0)),
        "followups[2].repeat_count: must be at least 1",
        id="follow-up-repeated-0-times",
    ),
    pytest.param(
        iv(lambda r: r["followups"][0].__setitem__("window_hours", 0)),
        "followups[0].window_hours: must be greater than 0",
        id="follow-up-window-of-0-hours",
    ),
    pytest.param(
        iv(lambda r: r["escalation"][0].__setitem__("overdue_hours", 0)),
        "escalation[0].overdue_hours: must be greater than 0",
        id="escalation-at-0-hours",
    ),
    pytest.param(
        iv(lambda r: r.__setitem__("minimum_observation_minutes", 0)),
        "minimum_observation_minutes: must be greater than 0",
        id="no-observation",
    ),
    # Offsets outside the session.
    pytest.param(
        iv(lambda r: r["schedule"][4].__setitem__("offset_minutes", -5)),
        "schedule[4].offset_minutes: must be at least 0",
        id="offset-before-the-anchor",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][4].__setitem__("offset_minutes", 10_000)),
        "schedule[4].offset_minutes: must be at most 720",
        id="offset-days-after-the-dose",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][5].__setitem__("offset_minutes", 15)),
        "schedule[5].offset_minutes: nothing is due after the discharge",
        id="offset-after-the-discharge",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][5].update(repeat_every_minutes=15, repeat_until="discharge")),
        "schedule[5].repeat_every_minutes: a check at the discharge cannot repeat",
        id="repeat-from-the-discharge",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][0].__setitem__("offset_minutes", 10)),
        "schedule[0].offset_minutes: a before-dose check is due at the dose",
        id="before-dose-check-after-the-dose",
    ),
    # Windows that do not contain their anchor.
    pytest.param(
        iv(lambda r: r["schedule"][0].__setitem__("window_minutes", 5)),
        "schedule[0].window_minutes: a before-dose check's window ends at the dose",
        id="before-dose-window-after-the-dose",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][0].__setitem__("window_before_minutes", 0)),
        "schedule[0].window_before_minutes: a before-dose check needs window_before_minutes",
        id="before-dose-window-of-no-width",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][4].update(window_minutes=0, window_before_minutes=0)),
        "schedule[4].window_minutes: the window has no width",
        id="window-of-no-width",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][5].__setitem__("window_minutes", 0)),
        "schedule[5].window_minutes: a check at the discharge looks back",
        id="discharge-check-looking-back-0",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][1].pop("repeat_until")),
        "schedule[1].repeat_every_minutes: repeat_until only with repeat_every_minutes",
        id="repeat-without-an-end",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][4].__setitem__("repeat_until", "discharge")),
        "schedule[4].repeat_until: repeat_until only with repeat_every_minutes",
        id="end-without-a-repeat",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][2].__setitem__("repeat_until", "dose_start")),
        "schedule[2].repeat_until: a repeat ends at or after its anchor",
        id="repeat-ending-before-its-anchor",
    ),
    pytest.param(
        esketamine(lambda r: r["schedule"][2].__setitem__("anchor", "infusion_end")),
        "schedule[2].anchor: 'infusion_end' needs an IV infusion",
        id="infusion-end-without-an-infusion",
    ),
    pytest.param(
        iv(lambda r: r.__setitem__("observation_anchor", "first_device")),
        "observation_anchor: 'first_device' needs an intranasal dose",
        id="first-device-without-devices",
    ),
    # Thresholds out of physical range.
    pytest.param(
        iv(lambda r: r["plausibility"].__setitem__("spo2", [50, 101])),
        "plausibility.spo2: limits must lie within 0–100",
        id="spo2-above-100",
    ),
    pytest.param(
        iv(lambda r: r["plausibility"].__setitem__("temperature_c", [10, 43])),
        "plausibility.temperature_c: limits must lie within 20–50",
        id="temperature-of-10-degrees",
    ),
    pytest.param(
        iv(lambda r: r["plausibility"].__setitem__("weight_kg", [0, 300])),
        "plausibility.weight_kg: limits must lie within 1–1000",
        id="weight-of-0",
    ),
    pytest.param(
        iv(lambda r: r["alerts"][4].__setitem__("value", 500)),
        "alerts[4].value: hr values must lie within 0–400",
        id="heart-rate-alert-at-500",
    ),
    pytest.param(
        iv(lambda r: r["alerts"][2].__setitem__("value", 250)),
        "alerts[2].value: a rise over the baseline must lie within 0–200",
        id="rise-of-250",
    ),
    pytest.param(
        iv(lambda r: r["discharge"].__setitem__("aldrete_min", 11)),
        "discharge.aldrete_min: must be at most 10",
        id="aldrete-above-10",
    ),
    pytest.param(
        iv(lambda r: r["discharge"].__setitem__("aldrete_spo2_one_point_from", 95)),
        "discharge.aldrete_spo2_one_point_from: the one-point SpO2 starts below",
        id="aldrete-one-point-above-two",
    ),
    pytest.param(
        iv(lambda r: r["dose"].__setitem__("default_mg_per_kg", 2)),
        "dose.default_mg_per_kg: the default dose must lie within the allowed range",
        id="default-dose-outside-the-allowed",
    ),
    # A warning more extreme than a critical of the same measurement and direction.
    pytest.param(
        iv(lambda r: r["alerts"][alert(r, "critical", "sbp", ">=", 200)].__setitem__("value", 170)),
        "alerts[0].value: warning sbp >= 180 is more extreme than the critical sbp >= 170",
        id="warning-sbp-180-over-critical-170",
    ),
    pytest.param(
        iv(lambda r: r["alerts"][alert(r, "warning", "spo2", "<", 93)].__setitem__("value", 85)),
        "alerts[8].value: warning spo2 < 85 is more extreme than the critical spo2 < 90",
        id="warning-spo2-85-under-critical-90",
    ),
    # Unknown codes.
    pytest.param(
        iv(lambda r: r["required_instruments"].append("phq8")),
        "required_instruments[3]: unknown instrument 'phq8'",
        id="unknown-instrument",
    ),
    pytest.param(
        iv(lambda r: r["alerts"][0].__setitem__("field", "map")),
        "alerts[0].field: unknown measurement 'map'",
        id="unknown-vital-field",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][1].__setitem__("measures", ["sbp", "bp"])),
        "schedule[1].measures[1]: unknown measurement 'bp'",
        id="unknown-measure",
    ),
    pytest.param(
        iv(lambda r: r["followups"][0].__setitem__("role", "Janitor")),
        "followups[0].role: unknown role 'Janitor'",
        id="unknown-role",
    ),
    pytest.param(
        iv(lambda r: r["escalation"][1].__setitem__("role", "Director")),
        "escalation[1].role: unknown role 'Director'",
        id="unknown-escalation-role",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][3].__setitem__("anchor", "lunch")),
        "schedule[3].anchor: unknown anchor 'lunch'",
        id="unknown-anchor",
    ),
    pytest.param(
        iv(lambda r: r["followups"][1].__setitem__("anchor", "admission")),
        "followups[1].anchor: unknown anchor 'admission'",
        id="unknown-follow-up-anchor",
    ),
    pytest.param(
        iv(lambda r: r["consent_kinds"].append("general-consent")),
        "consent_kinds[1]: unknown consent kind 'general-consent'",
        id="unknown-consent-kind",
    ),
    pytest.param(
        iv(lambda r: r["dose"].__setitem__("route", "oral")),
        "dose.route: unknown route 'oral'",
        id="unknown-route",
    ),
    pytest.param(
        iv(lambda r: r.__setitem__("rems_bp_check_code", "bp_45")),
        "rems_bp_check_code: 'bp_45' is not the code of a schedule check",
        id="unknown-rems-check",
    ),
    pytest.param(
        iv(lambda r: r["followups"][1].__setitem__("code", "next_day_call")),
        "followups[1].code: follow-up code 'next_day_call' is used twice",
        id="duplicate-follow-up-code",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][1].__setitem__("measures", ["sbp", "sbp"])),
        "schedule[1].measures: 'sbp' is listed twice",
        id="duplicate-measure",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][1].__setitem__("measures", [])),
        "schedule[1].measures: give at least 1 item(s)",
        id="no-measure",
    ),
    # Unknown keys.
    pytest.param(
        iv(lambda r: r.__setitem__("max_dose_mg", 100)),
        "rules: unknown keys: 'max_dose_mg'",
        id="unknown-top-level-key",
    ),
    pytest.param(
        iv(lambda r: r["schedule"][1].__setitem__("repeat_every", 10)),
        "schedule[1]: unknown keys: 'repeat_every'",
        id="misspelt-check-key",
    ),
    pytest.param(
        iv(lambda r: r["alerts"][1].__setitem__("persistence_minutes", 15)),
        "alerts[1]: unknown keys: 'persistence_minutes'",
        id="misspelt-alert-key",
    ),
    pytest.param(
        iv(lambda r: r["discharge"].__setitem__("escort", True)),
        "discharge: unknown keys: 'escort'",
        id="misspelt-discharge-key",
    ),
    pytest.param(
        iv(lambda r: r["dose"].__setitem__("device_mg", 28)),
        "dose: unknown keys: 'device_mg'",
        id="intranasal-key-in-an-iv-dose",
    ),
    # §M5 persistence.
    pytest.param(
        iv(lambda r: r["alerts"][12].__setitem__("persistence_window_minutes", 3)),
        "alerts[12].persistence_window_minutes: the persistence window must be at least",
        id="window-shorter-than-the-gap",
    ),
    pytest.param(
        iv(lambda r: r["alerts"][12].pop("persistence_window_minutes")),
        "alerts[12].persistence_window_minutes: give persistence_min_gap_minutes and",
        id="gap-without-a-window",
    ),
    pytest.param(
        iv(lambda r: r["alerts"][12].__setitem__("repeat_within_minutes", 5)),
        "alerts[12].repeat_within_minutes: give either repeat_within_minutes (legacy) or",
        id="legacy-and-new-persistence-keys",
    ),
    pytest.param(
        iv(lambda r: r["alerts"][0].__setitem__("repeat_check_minutes", 0)),
        "alerts[0].repeat_check_minutes: must be greater than 0",
        id="repeat-check-after-0-minutes",
    ),
]


@pytest.mark.parametrize(("rules", "expected"), REFUSED)
def test_sg1_a_malformed_document_is_refused_with_the_path_of_its_faulty_part(rules, expected):
    assert any(message.startswith(expected) for message in refusals(rules)), refusals(rules)


def test_sg1_every_problem_of_a_document_is_listed_not_only_the_first():
    rules = iv(lambda r: None)
    rules["schedule"][1]["repeat_every_minutes"] = 0
    rules["followups"][0]["role"] = "Janitor"
    rules["plausibility"]["hr"] = [20]

    messages = refusals(rules)

    assert [m.split(":")[0] for m in messages] == [
        "plausibility.hr",
        "schedule[1].repeat_every_minutes",
        "followups[0].role",
    ]


def test_sg1_the_example_of_the_issue_reads_as_written():
    messages = refusals(iv(lambda r: r["schedule"][2].__setitem__("repeat_every_minutes", 0)))

    assert messages == ["schedule[2].repeat_every_minutes: must be greater than 0"]


def test_sg1_rule_problems_returns_paths_and_messages_apart():
    problems = rule_problems(iv(lambda r: r["alerts"][0].__setitem__("field", "map")))

    assert [(p.path, p.message.split(";")[0]) for p in problems] == [
        ("alerts[0].field", "unknown measurement 'map'")
    ]
    assert rule_problems(V2["iv-ketamine"]) == []
    assert [str(p) for p in rule_problems([])] == ["rules: The rules must be a JSON object."]


# --- Hypothesis: generated documents --------------------------------------------------------------


@HYPOTHESIS
@given(document=rule_documents())
def test_sg1_every_generated_valid_document_parses(document):
    """500+ documents within what a clinic may decide (schedules, repeats, windows, alert
    values, limits, doses, discharge scoring, follow-ups) parse without error."""
    rules = parse_rules(document)

    assert len(rules.schedule) == len(document["schedule"])
    assert all(c.repeat_every_minutes is None or c.repeat_every_minutes > 0 for c in rules.schedule)


@HYPOTHESIS
@given(broken=malformed_documents())
def test_sg1_every_generated_malformed_document_is_refused_with_a_path(broken: Malformed):
    """500+ valid documents broken one way each (text for a number, a zero or negative repeat,
    an offset outside the session, a window without its anchor, a threshold out of physical
    range, a warning beyond its critical, an unknown code or key) are refused, naming where."""
    with pytest.raises(ValidationError) as caught:
        parse_rules(broken.document)

    messages = caught.value.messages
    assert all(PATH_MESSAGE.match(m) for m in messages), messages
    assert any(m.startswith(broken.path) and broken.needle in m for m in messages), (
        broken.kind,
        broken.path,
        broken.needle,
        messages,
    )


# --- The JSON Schema, from the same models --------------------------------------------------------


def test_sg1_the_json_schema_describes_every_key_and_code():
    schema = rules_json_schema()
    definitions = schema["$defs"]

    assert schema["title"] == "Vigil protocol rules"
    assert set(schema["properties"]) >= set(V2["esketamine-rems"])
    assert set(schema["required"]) == set(V1["iv-ketamine"])
    assert schema["additionalProperties"] is False
    assert all(
        d.get("additionalProperties") is False for d in definitions.values() if "properties" in d
    )
    check = definitions["ScheduledCheckDoc"]["properties"]
    assert set(check["anchor"]["enum"]) == set(ANCHORS)
    assert set(check["measures"]["items"]["enum"]) == {*VITAL_FIELDS, "cadss"}
    assert check["repeat_every_minutes"]["anyOf"][0]["exclusiveMinimum"] == 0
    followup = definitions["FollowUpRuleDoc"]["properties"]
    assert set(followup["role"]["enum"]) == set(ROLES)
    assert set(followup["instruments"]["items"]["enum"]) == set(INSTRUMENTS)
    assert set(schema["properties"]["consent_kinds"]["items"]["enum"]) == set(CONSENT_KINDS)
    assert schema["properties"]["dose"]["discriminator"]["propertyName"] == "route"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "role", ["nurse", "psychiatrist", "anesthesiologist", "gp", "administrator"]
)
def test_sg1_the_json_schema_is_served_to_staff(client, request, role):
    client.force_login(request.getfixturevalue(role))

    response = client.get(reverse("protocols:rules_schema"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == rules_json_schema()


@pytest.mark.django_db
def test_sg1_the_json_schema_sends_anonymous_visitors_to_the_login(client):
    response = client.get(reverse("protocols:rules_schema"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


# --- The protocol editor lists every problem per field --------------------------------------------


def _post_rules(client, url: str, rules: dict):
    return client.post(url, {"change_summary": "Clinic decision", "rules": json.dumps(rules)})


@pytest.mark.django_db
@pytest.mark.parametrize("editor", ["new", "edit"])
def test_sg1_the_editor_lists_each_problem_with_its_path_and_saves_nothing(
    client, administrator, editor
):
    protocol = Protocol.objects.get(slug="iv-ketamine")
    client.force_login(administrator)
    if editor == "new":
        url = reverse("protocols:version_new", args=[protocol.pk])
    else:
        client.post(
            reverse("protocols:version_new", args=[protocol.pk]),
            {"change_summary": "Draft", "rules": json.dumps(V2["iv-ketamine"])},
        )
        draft = protocol.versions.get(published_at__isnull=True)
        url = reverse("protocols:version_edit", args=[draft.pk])
    before = list(ProtocolVersion.objects.values()), ProtocolVersion.history.count()
    rules = iv(lambda r: None)
    rules["schedule"][2]["repeat_every_minutes"] = 0
    rules["followups"][3]["role"] = "Janitor"

    response = _post_rules(client, url, rules)

    page_text = response.content.decode()
    assert response.status_code == 200
    problems = response.context["form"].rule_problems
    assert [(p.path, p.where) for p in problems] == [
        (
            "schedule[2].repeat_every_minutes",
            "Required check 3 “Vitals after infusion” › repeat every minutes",
        ),
        ("followups[3].role", "Follow-up 4 “GP physical check at 28 days” › role"),
    ]
    assert 'data-path="schedule[2].repeat_every_minutes"' in page_text
    assert "must be greater than 0" in page_text
    assert 'data-path="followups[3].role"' in page_text
    assert 'aria-invalid="true"' in page_text
    assert reverse("protocols:rules_schema") in page_text
    assert (list(ProtocolVersion.objects.values()), ProtocolVersion.history.count()) == before


@pytest.mark.django_db
def test_sg1_the_editor_saves_a_document_without_problems(client, administrator):
    protocol = Protocol.objects.get(slug="iv-ketamine")
    client.force_login(administrator)
    rules = iv(lambda r: r.__setitem__("late_entry_minutes", 15))

    response = _post_rules(client, reverse("protocols:version_new", args=[protocol.pk]), rules)

    assert response.status_code == 302
    assert protocol.versions.latest("version").parsed.late_entry_minutes == 15
