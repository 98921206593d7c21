"""Protocol rules as data (SPEC §G1, §D): the shipped versions parse, malformed rule documents are
refused naming the faulty part, and plausibility limits are applied at their boundaries as the
protocol version states them."""

from __future__ import annotations

import copy
import importlib
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from protocols import defaults, services
from protocols.models import Assessment, ProtocolVersion
from protocols.rules import ProtocolRules, parse_rules

pytestmark = pytest.mark.django_db

SHIPPED = [pytest.param(slug, rules, id=slug) for slug, _, rules in defaults.DEFAULT_PROTOCOLS]
# Version 1 as migration 0002 installed it (a frozen copy inside the migration).
SHIPPED_V1 = {
    slug: rules
    for slug, _, rules in importlib.import_module(
        "protocols.migrations.0002_default_protocols_roles_guards"
    ).DEFAULT_PROTOCOLS_V1
}
# Keys every document carries; later keys have defaults so that stored versions stay readable.
REQUIRED_KEYS = sorted(SHIPPED_V1["iv-ketamine"])


def rules_with(change) -> dict:
    """A deep copy of the shipped IV-ketamine rules with `change(rules)` applied."""
    rules = copy.deepcopy(defaults.IV_KETAMINE)
    change(rules)
    return rules


def refusal(rules: dict) -> str:
    with pytest.raises(ValidationError) as caught:
        parse_rules(rules)
    assert len(caught.value.messages) == 1
    return caught.value.messages[0]


# --- The shipped versions ------------------------------------------------------------------------


@pytest.mark.parametrize(("slug", "shipped"), SHIPPED)
def test_the_shipped_version_is_published_and_parses(slug, shipped):
    v1 = ProtocolVersion.objects.get(protocol__slug=slug, version=1)
    v2 = ProtocolVersion.objects.get(protocol__slug=slug, version=2)

    parsed = parse_rules(v2.rules)

    assert v1.is_published and v2.is_published
    assert v1.rules == SHIPPED_V1[slug]
    assert v2.rules == shipped
    assert isinstance(parsed, ProtocolRules)
    assert v2.parsed == parsed
    assert isinstance(v1.parsed, ProtocolRules)  # stored versions stay readable


@pytest.mark.parametrize(("slug", "shipped"), SHIPPED)
def test_the_shipped_version_lists_the_contraindications_of_the_spec(slug, shipped):
    parsed = ProtocolVersion.objects.get(protocol__slug=slug, version=1).parsed

    severities = [c.severity for c in parsed.contraindications]

    assert severities.count("absolute") == 6  # SPEC §A2
    assert severities.count("relative") == 7
    assert len({c.code for c in parsed.contraindications}) == len(parsed.contraindications)
    assert set(parsed.required_instruments) == {"phq9", "gad7", "cssrs"}


def test_the_two_shipped_protocols_require_their_own_consent_kinds():
    iv = ProtocolVersion.objects.get(protocol__slug="iv-ketamine", version=1).parsed
    esk = ProtocolVersion.objects.get(protocol__slug="esketamine-rems", version=1).parsed

    assert iv.consent_kinds == ("ketamine-treatment",)
    assert esk.consent_kinds == ("esketamine-rems-enrollment",)
    assert (iv.minimum_observation_minutes, iv.observation_anchor) == (60, "infusion_end")
    assert (esk.minimum_observation_minutes, esk.observation_anchor) == (120, "first_device")


# --- Refusals naming the faulty part -------------------------------------------------------------


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_a_missing_top_level_key_is_refused_by_name(key):
    message = refusal(rules_with(lambda r: r.pop(key)))

    assert f"'{key}'" in message
    assert "missing" in message


@pytest.mark.parametrize(
    ("key", "default"),
    [
        ("late_entry_minutes", 10),
        ("rems_form_due_days", 7),
        ("rems_bp_check_code", None),
        ("minimum_age_years", None),
    ],
)
def test_a_key_added_after_version_1_takes_its_default_when_missing(key, default):
    rules = rules_with(lambda r: r.pop(key, None))

    assert getattr(parse_rules(rules), key) == default


def test_a_document_that_is_not_an_object_is_refused():
    assert "object" in refusal([defaults.IV_KETAMINE])


@pytest.mark.parametrize(
    ("section", "index", "key", "value"),
    [
        pytest.param("alerts", 0, "field", "blood_pressure", id="alert-unknown-field"),
        pytest.param("alerts", 4, "op", "=>", id="alert-unknown-operator"),
        pytest.param("alerts", 10, "level", "severe", id="alert-unknown-level"),
        pytest.param("predose_alerts", 1, "field", "map", id="predose-alert-unknown-field"),
        pytest.param("predose_alerts", 0, "op", "!=", id="predose-alert-unknown-operator"),
    ],
)
def test_an_unknown_alert_field_operator_or_level_is_refused_naming_the_alert(
    section, index, key, value
):
    message = refusal(rules_with(lambda r: r[section][index].__setitem__(key, value)))

    assert message.startswith(f"{section}[{index}].{key}:")
    assert "unknown" in message


def test_an_alert_missing_its_value_is_refused_naming_the_alert():
    message = refusal(rules_with(lambda r: r["alerts"][2].pop("value")))

    assert message.startswith("alerts[2]:")
    assert "'value'" in message


@pytest.mark.parametrize("field", sorted(defaults.PLAUSIBILITY))
def test_a_plausibility_limit_with_low_above_high_is_refused_naming_the_measurement(field):
    message = refusal(
        rules_with(lambda r: r["plausibility"].__setitem__(field, r["plausibility"][field][::-1]))
    )

    assert message == f"plausibility.{field}: low is above high."


def test_a_fahrenheit_hint_with_low_above_high_is_refused_by_name():
    message = refusal(rules_with(lambda r: r["fahrenheit_hint"].reverse()))

    assert message == "fahrenheit_hint: low is above high."


def test_a_limit_that_is_not_a_pair_is_refused_naming_the_measurement():
    message = refusal(rules_with(lambda r: r["plausibility"].__setitem__("hr", [20])))

    assert message.startswith("plausibility.hr:")


def test_an_unknown_measurement_in_plausibility_is_refused():
    message = refusal(rules_with(lambda r: r["plausibility"].__setitem__("bp", [1, 2])))

    assert message.startswith("plausibility:")


@pytest.mark.parametrize("index", [0, 2])
def test_a_schedule_entry_with_an_unknown_anchor_is_refused_naming_the_schedule(index):
    message = refusal(rules_with(lambda r: r["schedule"][index].__setitem__("anchor", "lunch")))

    assert message.startswith(f"schedule[{index}].anchor:")
    assert "unknown anchor" in message


def test_an_unknown_observation_anchor_is_refused_by_name():
    message = refusal(rules_with(lambda r: r.__setitem__("observation_anchor", "lunch")))

    assert message.startswith("observation_anchor:")
    assert "anchor" in message


def test_a_follow_up_for_an_unknown_role_is_refused_naming_the_follow_ups():
    message = refusal(rules_with(lambda r: r["followups"][1].__setitem__("role", "Janitor")))

    assert message.startswith("followups[1].role:")
    assert "unknown role" in message


def test_an_unknown_key_in_a_schedule_entry_is_refused_naming_the_entry():
    message = refusal(rules_with(lambda r: r["schedule"][3].__setitem__("colour", "red")))

    assert message.startswith("schedule[3]:")
    assert "colour" in message


def test_an_unknown_contraindication_severity_is_refused():
    message = refusal(
        rules_with(lambda r: r["contraindications"][0].__setitem__("severity", "mild"))
    )

    assert message.startswith("contraindications[0].severity:")
    assert "unknown severity" in message


def test_an_unknown_required_instrument_is_refused():
    message = refusal(rules_with(lambda r: r["required_instruments"].append("phq8")))
    index = len(defaults.IV_KETAMINE["required_instruments"])

    assert message.startswith(f"required_instruments[{index}]:")
    assert "unknown instrument" in message


def test_a_key_of_the_wrong_type_is_refused_by_name():
    message = refusal(rules_with(lambda r: r.__setitem__("minimum_observation_minutes", "60")))

    assert message == (
        "rules: 'minimum_observation_minutes' has the wrong type: give a whole number."
    )


def test_the_version_service_refuses_a_malformed_document_on_the_rules_field(
    iv_protocol, administrator
):
    broken = rules_with(lambda r: r["plausibility"].__setitem__("sbp", [300, 50]))

    with pytest.raises(ValidationError) as caught:
        services.protocol_version_create(
            protocol=iv_protocol, acting_user=administrator, rules=broken, change_summary="x"
        )

    assert caught.value.message_dict == {"rules": ["plausibility.sbp: low is above high."]}
    assert iv_protocol.versions.count() == 2  # the two shipped versions, nothing more


UNCHECKED = "BUG: protocols/rules.py parse_rules does not validate {what}; {consequence}"


@pytest.mark.parametrize(
    ("change", "part"),
    [
        pytest.param(
            lambda r: r["schedule"][1].__setitem__("repeat_until", "lunch"),
            "schedule",
            id="schedule-repeat-until-unknown-anchor",
        ),
        pytest.param(
            lambda r: r["escalation"][0].__setitem__("role", "Janitor"),
            "escalation",
            id="escalation-unknown-role",
        ),
        pytest.param(
            lambda r: r["schedule"][0].__setitem__("measures", ["blood_pressure"]),
            "schedule",
            id="schedule-unknown-measure",
        ),
        pytest.param(
            lambda r: r["followups"][1].__setitem__("instruments", ["phq8"]),
            "followups",
            id="followup-unknown-instrument",
        ),
    ],
)
def test_unknown_anchors_roles_and_names_anywhere_in_the_rules_are_refused(change, part):
    message = refusal(rules_with(change))

    assert part in message


@pytest.mark.parametrize(
    ("change", "part"),
    [
        pytest.param(
            lambda r: r["plausibility"].__setitem__("sbp", ["low", 300]),
            "plausibility.sbp",
            id="limit-text",
        ),
        pytest.param(
            lambda r: r["plausibility"].__setitem__("sbp", [None, 300]),
            "plausibility.sbp",
            id="limit-null",
        ),
        pytest.param(
            lambda r: r["alerts"][0].__setitem__("value", "high"), "alerts[0]", id="alert-text"
        ),
    ],
)
def test_a_non_numeric_limit_or_alert_value_is_refused_naming_the_part(change, part):
    assert part in refusal(rules_with(change))


# --- Plausibility limits, as the protocol version states them (§M4) -----------------------------


def limit_cases() -> list:
    """Every plausibility field × {low, high, below low, above high}; values read at run time."""
    cases = []
    for field in sorted(defaults.PLAUSIBILITY):
        for edge, offset, accepted in (
            ("low", 0, True),
            ("high", 0, True),
            ("low", -1, False),
            ("high", +1, False),
        ):
            label = f"{field}-{edge}{offset:+d}" if offset else f"{field}-{edge}"
            cases.append(pytest.param(field, edge, offset, accepted, id=label))
    return cases


@pytest.mark.parametrize(("field", "edge", "offset", "accepted"), limit_cases())
def test_plausibility_accepts_each_limit_and_refuses_one_beyond_it(
    course, field, edge, offset, accepted
):
    rules = course.protocol_version.parsed
    limit = rules.plausibility[field]
    value = getattr(limit, edge) + offset

    errors = services.plausibility_errors(rules, {field: value})

    if accepted:
        assert errors == {}
    else:
        assert errors == {field: services.PLAUSIBILITY.format(low=limit.low, high=limit.high)}


def test_the_plausibility_fields_tested_are_those_of_the_pinned_version(course):
    assert set(course.protocol_version.parsed.plausibility) == set(defaults.PLAUSIBILITY)


def _pressure_inside_both_limits(course) -> Decimal:
    plausibility = course.protocol_version.parsed.plausibility
    value = max(plausibility["sbp"].low, plausibility["dbp"].low) + 1
    assert value + 1 <= min(plausibility["sbp"].high, plausibility["dbp"].high)
    return value


@pytest.mark.parametrize("dbp_above_sbp_by", [0, 1], ids=["equal", "above"])
def test_a_diastolic_at_or_above_the_systolic_is_refused(course, dbp_above_sbp_by):
    rules = course.protocol_version.parsed
    sbp = _pressure_inside_both_limits(course)

    errors = services.plausibility_errors(rules, {"sbp": sbp, "dbp": sbp + dbp_above_sbp_by})

    assert errors == {"dbp": services.DBP_NOT_BELOW_SBP}


def test_a_diastolic_just_below_the_systolic_is_accepted(course):
    rules = course.protocol_version.parsed
    sbp = _pressure_inside_both_limits(course) + 1

    assert services.plausibility_errors(rules, {"sbp": sbp, "dbp": sbp - 1}) == {}


def test_the_draft_service_refuses_an_implausible_value_and_saves_nothing(draft, nurse, course):
    limit = course.protocol_version.parsed.plausibility["spo2"]
    before = Assessment.objects.values().get(pk=draft.pk)

    with pytest.raises(ValidationError) as caught:
        services.assessment_update(
            assessment=draft, acting_user=nurse, diagnosis="changed", spo2=limit.high + 1
        )

    assert set(caught.value.message_dict) == {"spo2"}
    assert Assessment.objects.values().get(pk=draft.pk) == before


def test_the_draft_service_refuses_a_diastolic_above_the_stored_systolic(
    complete_draft, nurse, course
):
    stored_sbp = complete_draft.sbp

    with pytest.raises(ValidationError) as caught:
        services.assessment_update(assessment=complete_draft, acting_user=nurse, dbp=stored_sbp)

    assert caught.value.message_dict == {"dbp": [services.DBP_NOT_BELOW_SBP]}
