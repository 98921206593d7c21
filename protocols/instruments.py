"""Scored instruments (SPEC §I): item texts, totals, bands and risk, computed from item answers.

One module for Step 1 assessments and Step 3 follow-ups. Totals are never entered; they are
derived here from the stored item answers, which are kept alongside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.core.exceptions import ValidationError

FREQUENCY_ANSWERS = (
    (0, "Not at all"),
    (1, "Several days"),
    (2, "More than half the days"),
    (3, "Nearly every day"),
)


@dataclass(frozen=True)
class Band:
    low: int
    high: int
    label: str


@dataclass(frozen=True)
class Scale:
    code: str
    name: str
    items: tuple[str, ...]
    bands: tuple[Band, ...]
    loinc_panel: str
    loinc_total: str

    @property
    def max_total(self) -> int:
        return 3 * len(self.items)

    def band_for(self, total: int) -> str:
        return next(b.label for b in self.bands if b.low <= total <= b.high)


@dataclass(frozen=True)
class ScaleResult:
    items: tuple[int, ...]
    total: int
    band: str


PHQ9 = Scale(
    code="phq9",
    name="PHQ-9",
    items=(
        "Little interest or pleasure in doing things",
        "Feeling down, depressed, or hopeless",
        "Trouble falling or staying asleep, or sleeping too much",
        "Feeling tired or having little energy",
        "Poor appetite or overeating",
        "Feeling bad about yourself — or that you are a failure or have let yourself or your "
        "family down",
        "Trouble concentrating on things, such as reading the newspaper or watching television",
        "Moving or speaking so slowly that other people could have noticed? Or the opposite — "
        "being so fidgety or restless that you have been moving around a lot more than usual",
        "Thoughts that you would be better off dead or of hurting yourself in some way",
    ),
    bands=(
        Band(0, 4, "minimal"),
        Band(5, 9, "mild"),
        Band(10, 14, "moderate"),
        Band(15, 19, "moderately severe"),
        Band(20, 27, "severe"),
    ),
    loinc_panel="44249-1",
    loinc_total="44261-6",
)

GAD7 = Scale(
    code="gad7",
    name="GAD-7",
    items=(
        "Feeling nervous, anxious or on edge",
        "Not being able to stop or control worrying",
        "Worrying too much about different things",
        "Trouble relaxing",
        "Being so restless that it is hard to sit still",
        "Becoming easily annoyed or irritable",
        "Feeling afraid as if something awful might happen",
    ),
    bands=(
        Band(0, 4, "minimal"),
        Band(5, 9, "mild"),
        Band(10, 14, "moderate"),
        Band(15, 21, "severe"),
    ),
    loinc_panel="69737-5",
    loinc_total="70274-6",
)

PHQ9_SELF_HARM_ITEM = 9  # 1-based, as printed on the form
ITEMS_INCOMPLETE = "Answer every item ({missing} missing)."
ITEMS_TOO_MANY = "This scale has {count} items; more answers were given."
ITEM_OUT_OF_RANGE = "Each answer is 0, 1, 2 or 3."


def score_scale(scale: Scale, items: Sequence[int | None]) -> ScaleResult:
    """Total and band from item answers; refuses incomplete or out-of-range answers."""
    if len(items) > len(scale.items):
        raise ValidationError(ITEMS_TOO_MANY.format(count=len(scale.items)))
    if len(items) < len(scale.items):
        raise ValidationError(ITEMS_INCOMPLETE.format(missing=len(scale.items) - len(items)))
    missing = sum(1 for answer in items if answer is None)
    if missing:
        raise ValidationError(ITEMS_INCOMPLETE.format(missing=missing))
    if any(isinstance(a, bool) or a not in (0, 1, 2, 3) for a in items):
        raise ValidationError(ITEM_OUT_OF_RANGE)
    total = sum(items)
    return ScaleResult(items=tuple(items), total=total, band=scale.band_for(total))


GAD7_EVALUATION_FROM = 10  # instrument manual: a total of 10 or more warrants evaluation


def gad7_needs_evaluation(total: int | None) -> bool:
    """GAD-7 >= 10: the "further evaluation" flag for the psychiatrist (SPEC §I, §F2)."""
    return total is not None and total >= GAD7_EVALUATION_FROM


def phq9_self_harm_positive(items: Sequence[int | None] | None) -> bool:
    """PHQ-9 item 9 > 0: the suicide-risk flag (SPEC §A4, §F2)."""
    if not items or len(items) < PHQ9_SELF_HARM_ITEM:
        return False
    answer = items[PHQ9_SELF_HARM_ITEM - 1]
    return answer is not None and answer > 0


# --- C-SSRS screener -------------------------------------------------------------------------

CSSRS_QUESTIONS = (
    ("q1", "Have you wished you were dead or wished you could go to sleep and not wake up?"),
    ("q2", "Have you actually had any thoughts of killing yourself?"),
    ("q3", "Have you been thinking about how you might do this?"),
    ("q4", "Have you had these thoughts and had some intention of acting on them?"),
    (
        "q5",
        "Have you started to work out or worked out the details of how to kill yourself? "
        "Do you intend to carry out this plan?",
    ),
    (
        "q6",
        "Have you ever done anything, started to do anything, or prepared to do anything to "
        "end your life?",
    ),
    ("q6_recent", "Was this within the past 3 months?"),
)
CSSRS_SKIPPED = ("q3", "q4", "q5")


def cssrs_label(key: str, text: str) -> str:
    """'2. Have you…' — numbered as the skip instructions refer to them."""
    return f"{key[1]}. {text}" if key[1:].isdigit() else f"6b. {text}"


class CssrsRisk:
    NONE = "none"
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"
    ORDER = (NONE, LOW, MODERATE, HIGH)


CSSRS_REQUIRED = "Answer this question."
CSSRS_SKIP = "Leave this empty: question 2 was answered no."
CSSRS_RECENT_ONLY_IF_BEHAVIOUR = "Only asked when question 6 is yes."


def cssrs_validate(answers: dict[str, bool | None]) -> dict[str, str]:
    """Field errors for the screener's skip logic; empty when the answers are complete."""
    errors: dict[str, str] = {}
    for key in ("q1", "q2", "q6"):
        if answers.get(key) is None:
            errors[key] = CSSRS_REQUIRED
    if answers.get("q2") is True:
        for key in CSSRS_SKIPPED:
            if answers.get(key) is None:
                errors[key] = CSSRS_REQUIRED
    elif answers.get("q2") is False:
        for key in CSSRS_SKIPPED:
            if answers.get(key) is not None:
                errors[key] = CSSRS_SKIP
    if answers.get("q6") is True and answers.get("q6_recent") is None:
        errors["q6_recent"] = CSSRS_REQUIRED
    if answers.get("q6") is False and answers.get("q6_recent") is not None:
        errors["q6_recent"] = CSSRS_RECENT_ONLY_IF_BEHAVIOUR
    return errors


def cssrs_risk(answers: dict[str, bool | None]) -> str:
    """Risk level (SPEC §I): high if Q4 or Q5 or behaviour within 3 months; moderate if Q3 or
    older behaviour; low if only Q1/Q2; none otherwise. Answers must pass `cssrs_validate`."""
    errors = cssrs_validate(answers)
    if errors:
        raise ValidationError(errors)
    behaviour = answers.get("q6") is True
    if answers.get("q4") or answers.get("q5") or (behaviour and answers.get("q6_recent")):
        return CssrsRisk.HIGH
    if answers.get("q3") or behaviour:
        return CssrsRisk.MODERATE
    if answers.get("q1") or answers.get("q2"):
        return CssrsRisk.LOW
    return CssrsRisk.NONE


# --- Clinician-entered totals -----------------------------------------------------------------

TOTAL_RANGES = {"moca": (0, 30), "madrs": (0, 60), "cadss": (0, 92)}

# PHQ-9 and GAD-7 ask about the last 2 weeks: repeating them sooner double-counts days.
SCALE_RECALL_DAYS = 14
# Treatment response: PHQ-9 at least 50 % below baseline; remission: the "minimal" band.
RESPONSE_DROP = 0.5
REMISSION_BAND = "minimal"
