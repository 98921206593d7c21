"""Scored instruments (SPEC §I): PHQ-9 and GAD-7 totals and bands at every edge, refused answers,
the PHQ-9 self-harm item, and the C-SSRS screener's skip logic and risk levels."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from protocols import instruments
from protocols.instruments import GAD7, PHQ9, CssrsRisk, Scale

pytestmark = pytest.mark.django_db

SCALES = (PHQ9, GAD7)


def items_for_total(scale: Scale, total: int) -> list[int]:
    """A complete, valid answer list of `scale` whose items add up to `total`."""
    assert 0 <= total <= scale.max_total
    items = [3] * (total // 3) + ([total % 3] if total % 3 else [])
    return items + [0] * (len(scale.items) - len(items))


def band_edges() -> list:
    """Both edges of every band of both scales, read from the Band objects themselves."""
    return [
        pytest.param(scale, total, band.label, id=f"{scale.code}-{band.label}-{edge}-{total}")
        for scale in SCALES
        for band in scale.bands
        for edge, total in (("low", band.low), ("high", band.high))
    ]


# --- PHQ-9 and GAD-7 -----------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "total", "label"), band_edges())
def test_a_total_at_a_band_edge_falls_in_that_band(scale, total, label):
    items = items_for_total(scale, total)

    result = instruments.score_scale(scale, items)

    assert result.total == total
    assert result.band == label
    assert result.items == tuple(items)  # item answers kept alongside the total (§I)


@pytest.mark.parametrize(
    ("scale", "spec_bands"),
    [
        pytest.param(
            PHQ9,
            [
                (0, 4, "minimal"),
                (5, 9, "mild"),
                (10, 14, "moderate"),
                (15, 19, "moderately severe"),
                (20, 27, "severe"),
            ],
            id="phq9",
        ),
        pytest.param(
            GAD7,
            [(0, 4, "minimal"), (5, 9, "mild"), (10, 14, "moderate"), (15, 21, "severe")],
            id="gad7",
        ),
    ],
)
def test_the_bands_are_those_of_the_spec_and_tile_every_possible_total(scale, spec_bands):
    assert [(b.low, b.high, b.label) for b in scale.bands] == spec_bands
    assert scale.bands[0].low == 0
    assert scale.bands[-1].high == scale.max_total == 3 * len(scale.items)
    for before, after in zip(scale.bands, scale.bands[1:], strict=False):
        assert after.low == before.high + 1


@pytest.mark.parametrize("scale", SCALES, ids=lambda s: s.code)
def test_the_item_counts_and_loinc_codes_are_those_of_the_spec(scale):
    expected = {"phq9": (9, "44249-1", "44261-6"), "gad7": (7, "69737-5", "70274-6")}
    assert (len(scale.items), scale.loinc_panel, scale.loinc_total) == expected[scale.code]


@pytest.mark.parametrize("scale", SCALES, ids=lambda s: s.code)
@pytest.mark.parametrize("answered", [0, 1], ids=["no-items", "one-item-short"])
def test_a_short_answer_list_is_refused_with_the_number_missing(scale, answered):
    items = [1] * (len(scale.items) - 1) if answered else []
    missing = len(scale.items) - len(items)

    with pytest.raises(ValidationError) as caught:
        instruments.score_scale(scale, items)

    assert caught.value.messages == [instruments.ITEMS_INCOMPLETE.format(missing=missing)]


@pytest.mark.parametrize("scale", SCALES, ids=lambda s: s.code)
@pytest.mark.parametrize("blanks", [1, 3])
def test_unanswered_items_are_refused_with_the_number_missing(scale, blanks):
    items = [None] * blanks + [2] * (len(scale.items) - blanks)

    with pytest.raises(ValidationError) as caught:
        instruments.score_scale(scale, items)

    assert caught.value.messages == [instruments.ITEMS_INCOMPLETE.format(missing=blanks)]


@pytest.mark.parametrize("scale", SCALES, ids=lambda s: s.code)
def test_an_answer_list_longer_than_the_scale_is_refused(scale):
    with pytest.raises(ValidationError):
        instruments.score_scale(scale, [0] * (len(scale.items) + 1))


@pytest.mark.parametrize("scale", SCALES, ids=lambda s: s.code)
def test_an_answer_list_longer_than_the_scale_is_not_reported_as_negative_missing(scale):
    with pytest.raises(ValidationError) as caught:
        instruments.score_scale(scale, [0] * (len(scale.items) + 1))

    assert "-1" not in caught.value.messages[0]


@pytest.mark.parametrize("scale", SCALES, ids=lambda s: s.code)
@pytest.mark.parametrize("bad", [4, -1, 2.5, "2", True], ids=repr)
def test_an_answer_outside_0_to_3_is_refused(scale, bad):
    items = [1] * (len(scale.items) - 1) + [bad]

    with pytest.raises(ValidationError) as caught:
        instruments.score_scale(scale, items)

    assert caught.value.messages == [instruments.ITEM_OUT_OF_RANGE]


@pytest.mark.parametrize("answer", [1, 2, 3])
def test_phq9_item_9_above_0_is_the_self_harm_flag(answer):
    items = [0] * 8 + [answer]

    assert instruments.phq9_self_harm_positive(items) is True


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([3] * 8 + [0], id="item9-zero-with-every-other-item-maximal"),
        pytest.param([3] * 8 + [None], id="item9-unanswered"),
        pytest.param([3] * 8, id="item9-absent"),
        pytest.param([], id="empty"),
        pytest.param(None, id="none"),
    ],
)
def test_phq9_self_harm_flag_is_off_unless_item_9_is_above_0(items):
    assert instruments.phq9_self_harm_positive(items) is False


def test_the_self_harm_item_is_the_ninth_printed_item():
    assert instruments.PHQ9_SELF_HARM_ITEM == 9
    assert "better off dead" in PHQ9.items[instruments.PHQ9_SELF_HARM_ITEM - 1]


# --- C-SSRS screener -----------------------------------------------------------------------------


def cssrs(**answers: bool | None) -> dict[str, bool | None]:
    """A complete 'no' screener (Q2 no, so Q3–5 skipped), with `answers` overriding."""
    base = {
        "q1": False,
        "q2": False,
        "q3": None,
        "q4": None,
        "q5": None,
        "q6": False,
        "q6_recent": None,
    }
    return base | answers


def test_a_complete_no_screener_has_no_errors():
    assert instruments.cssrs_validate(cssrs()) == {}


@pytest.mark.parametrize("question", instruments.CSSRS_SKIPPED)
@pytest.mark.parametrize("answer", [True, False], ids=["yes", "no"])
def test_q2_no_skips_q3_to_q5_and_an_answer_there_is_a_skip_error(question, answer):
    answers = cssrs(q2=False, **{question: answer})

    assert instruments.cssrs_validate(answers) == {question: instruments.CSSRS_SKIP}
    with pytest.raises(ValidationError):
        instruments.cssrs_risk(answers)


@pytest.mark.parametrize("question", instruments.CSSRS_SKIPPED)
def test_q2_yes_requires_each_of_q3_to_q5(question):
    answers = cssrs(q2=True, q3=False, q4=False, q5=False) | {question: None}

    assert instruments.cssrs_validate(answers) == {question: instruments.CSSRS_REQUIRED}
    with pytest.raises(ValidationError):
        instruments.cssrs_risk(answers)


def test_q2_yes_with_q3_to_q5_all_unanswered_lists_all_three():
    errors = instruments.cssrs_validate(cssrs(q2=True))

    assert errors == {q: instruments.CSSRS_REQUIRED for q in instruments.CSSRS_SKIPPED}


@pytest.mark.parametrize("question", ["q1", "q2", "q6"])
def test_q1_q2_and_q6_are_always_required(question):
    answers = cssrs(**{question: None})

    assert instruments.cssrs_validate(answers)[question] == instruments.CSSRS_REQUIRED


def test_q6_yes_requires_whether_it_was_within_3_months():
    answers = cssrs(q6=True, q6_recent=None)

    assert instruments.cssrs_validate(answers) == {"q6_recent": instruments.CSSRS_REQUIRED}
    with pytest.raises(ValidationError):
        instruments.cssrs_risk(answers)


@pytest.mark.parametrize("recent", [True, False], ids=["yes", "no"])
def test_q6_no_leaves_the_3_month_question_unasked(recent):
    answers = cssrs(q6=False, q6_recent=recent)

    assert instruments.cssrs_validate(answers) == {
        "q6_recent": instruments.CSSRS_RECENT_ONLY_IF_BEHAVIOUR
    }


@pytest.mark.parametrize(
    ("answers", "risk"),
    [
        pytest.param(cssrs(), CssrsRisk.NONE, id="none-all-no"),
        pytest.param(cssrs(q1=True), CssrsRisk.LOW, id="low-q1-wish-to-be-dead"),
        pytest.param(
            cssrs(q2=True, q3=False, q4=False, q5=False), CssrsRisk.LOW, id="low-q2-thoughts-only"
        ),
        pytest.param(
            cssrs(q1=True, q2=True, q3=False, q4=False, q5=False),
            CssrsRisk.LOW,
            id="low-q1-and-q2",
        ),
        pytest.param(
            cssrs(q2=True, q3=True, q4=False, q5=False), CssrsRisk.MODERATE, id="moderate-q3-method"
        ),
        pytest.param(
            cssrs(q6=True, q6_recent=False),
            CssrsRisk.MODERATE,
            id="moderate-behaviour-over-3-months-ago",
        ),
        pytest.param(
            cssrs(q2=True, q3=False, q4=True, q5=False), CssrsRisk.HIGH, id="high-q4-intent"
        ),
        pytest.param(
            cssrs(q2=True, q3=False, q4=False, q5=True), CssrsRisk.HIGH, id="high-q5-plan"
        ),
        pytest.param(
            cssrs(q6=True, q6_recent=True), CssrsRisk.HIGH, id="high-behaviour-within-3-months"
        ),
        pytest.param(
            cssrs(q1=True, q2=True, q3=True, q4=False, q5=False, q6=True, q6_recent=False),
            CssrsRisk.MODERATE,
            id="moderate-method-and-old-behaviour",
        ),
    ],
)
def test_each_risk_level_follows_from_its_defining_answers(answers, risk):
    assert instruments.cssrs_validate(answers) == {}
    assert instruments.cssrs_risk(answers) == risk


def test_behaviour_within_3_months_is_high_even_with_no_current_thoughts():
    assert instruments.cssrs_risk(cssrs(q1=False, q2=False, q6=True, q6_recent=True)) == "high"


def test_risk_is_refused_for_an_incomplete_screener():
    with pytest.raises(ValidationError) as caught:
        instruments.cssrs_risk({"q1": True})

    assert set(caught.value.message_dict) == {"q2", "q6"}
