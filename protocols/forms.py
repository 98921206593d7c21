"""Step 1 forms. Items are entered one by one; totals are computed by protocols.instruments."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from crispy_forms.bootstrap import InlineRadios
from crispy_forms.helper import FormHelper
from crispy_forms.layout import HTML, Column, Div, Fieldset, Layout, Row
from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.utils.text import capfirst

from clinic.models import Role, User
from patients.forms import reject_control_characters
from protocols import instruments
from protocols.models import Assessment, Protocol, ProtocolVersion, TreatmentCourse
from protocols.rules import RuleProblem, rule_problems
from protocols.services import ASSESSMENT_FIELDS

YES_NO = [("yes", "Yes"), ("no", "No")]
RULES_NOT_JSON = "The rules are not valid JSON: {error}"


def yes_no_field(label: str, required: bool = False) -> forms.TypedChoiceField:
    return forms.TypedChoiceField(
        label=label,
        choices=YES_NO,
        coerce=lambda value: value == "yes",
        empty_value=None,
        required=required,
        widget=forms.RadioSelect,
    )


def _yes_no_initial(value: bool | None) -> str | None:
    return None if value is None else ("yes" if value else "no")


class AssessmentForm(forms.ModelForm):
    """The whole of SPEC §A1 on one keyboard-friendly page, in the order of the interview."""

    BOOLEAN_FIELDS = (
        "psychosis_personal",
        "mania_personal",
        "psychosis_mania_family",
        "benzodiazepines",
        "sedative_hypnotics",
        "psychostimulants",
        "maois",
        "opioids",
    )

    class Meta:
        model = Assessment
        fields = [
            f
            for f in ASSESSMENT_FIELDS
            if f not in {"phq9_items", "gad7_items", "cssrs_answers", "contraindications"}
        ]
        widgets = {
            "psychiatric_history": forms.Textarea(attrs={"rows": 3}),
            "substance_use": forms.Textarea(attrs={"rows": 2}),
            "medical_history": forms.Textarea(attrs={"rows": 3}),
            "current_medications": forms.Textarea(attrs={"rows": 2}),
            "concomitant_notes": forms.Textarea(attrs={"rows": 2}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        assessment: Assessment = self.instance
        self.rules = assessment.course.protocol_version.parsed
        for name in self.BOOLEAN_FIELDS:
            label = Assessment._meta.get_field(name).verbose_name
            self.fields[name] = yes_no_field(capfirst(str(label)))
            self.initial[name] = _yes_no_initial(getattr(assessment, name))
        for name in ("ketamine_pcp_use", "pregnancy"):
            # Radios: no blank choice; leaving the group unanswered means "not yet asked".
            self.fields[name].choices = [c for c in self.fields[name].choices if c[0]]
            self.fields[name].widget = forms.RadioSelect(choices=self.fields[name].choices)
        for name in ("sbp", "dbp", "hr", "rr", "spo2"):
            self.fields[name].widget.attrs.update(inputmode="numeric", min=0, max=400)
        self.fields["weight_kg"].widget.attrs.update(inputmode="decimal", step="0.1")
        for name in ("moca_total", "madrs_total"):
            low, high = instruments.TOTAL_RANGES[name.removesuffix("_total")]
            self.fields[name].validators += [MinValueValidator(low), MaxValueValidator(high)]
            self.fields[name].widget.attrs.update(min=low, max=high, inputmode="numeric")
            self.fields[name].help_text = f"Optional, {low}–{high}."
        for field in self.fields.values():
            if isinstance(field, forms.CharField):
                field.validators.append(reject_control_characters)

        scale_rows = []
        for scale in (instruments.PHQ9, instruments.GAD7):
            stored = getattr(assessment, f"{scale.code}_items") or [None] * len(scale.items)
            for i, text in enumerate(scale.items, start=1):
                name = f"{scale.code}_{i}"
                self.fields[name] = forms.TypedChoiceField(
                    label=f"{i}. {text}",
                    choices=[
                        (str(v), f"{v} {label}") for v, label in instruments.FREQUENCY_ANSWERS
                    ],
                    coerce=int,
                    empty_value=None,
                    required=False,
                    widget=forms.RadioSelect,
                )
                if i <= len(stored) and stored[i - 1] is not None:
                    self.initial[name] = str(stored[i - 1])
            scale_rows.append(
                Fieldset(
                    f"{scale.name} — over the last 2 weeks",
                    *[InlineRadios(f"{scale.code}_{i}") for i in range(1, len(scale.items) + 1)],
                    css_id=f"section-{scale.code}",
                )
            )
        answers = assessment.cssrs_answers or {}
        for key, text in instruments.CSSRS_QUESTIONS:
            self.fields[f"cssrs_{key}"] = yes_no_field(instruments.cssrs_label(key, text))
            self.initial[f"cssrs_{key}"] = _yes_no_initial(answers.get(key))
        given = assessment.contraindications or {}
        contraindication_rows = []
        for item in self.rules.contraindications:
            answer = given.get(item.code) or {}
            kind = "absolute" if item.is_absolute else "relative — note required"
            self.fields[f"ci_{item.code}"] = yes_no_field(f"{item.label} ({kind})")
            self.initial[f"ci_{item.code}"] = _yes_no_initial(answer.get("present"))
            self.fields[f"ci_{item.code}_note"] = forms.CharField(
                label="Note",
                required=False,
                max_length=500,
                validators=[reject_control_characters],
            )
            self.initial[f"ci_{item.code}_note"] = answer.get("note", "")
            contraindication_rows.append(
                Row(
                    Column(InlineRadios(f"ci_{item.code}"), css_class="col-md-7"),
                    Column(f"ci_{item.code}_note", css_class="col-md-5"),
                )
            )

        self.helper = FormHelper()
        self.helper.form_tag = False
        self.helper.layout = Layout(
            Fieldset(
                "Psychiatric history and diagnosis",
                "diagnosis",
                "psychiatric_history",
                Row(
                    *[
                        Column(InlineRadios(n), css_class="col-md-4")
                        for n in ("psychosis_personal", "mania_personal", "psychosis_mania_family")
                    ]
                ),
                css_id="section-history",
            ),
            Fieldset(
                "Substance use",
                "substance_use",
                Row(
                    Column(InlineRadios("ketamine_pcp_use"), css_class="col-md-6"),
                    Column("alcohol_use", css_class="col-md-6"),
                ),
            ),
            Fieldset(
                "Medical history, medicines, allergies",
                "medical_history",
                "current_medications",
                "allergies",
                Row(
                    *[
                        Column(InlineRadios(n), css_class="col-md-4")
                        for n in ("benzodiazepines", "sedative_hypnotics", "psychostimulants")
                    ]
                ),
                Row(*[Column(InlineRadios(n), css_class="col-md-4") for n in ("maois", "opioids")]),
                "concomitant_notes",
                InlineRadios("pregnancy"),
            ),
            Fieldset(
                "Baseline vitals and weight",
                Row(
                    *[
                        Column(n, css_class="col-6 col-md-2")
                        for n in ("sbp", "dbp", "hr", "rr", "spo2", "weight_kg")
                    ]
                ),
                css_id="section-vitals",
            ),
            Fieldset("Contraindications", *contraindication_rows, css_id="section-contra"),
            *scale_rows,
            Fieldset(
                "C-SSRS screener — past month",
                HTML(
                    '<p class="small text-body-secondary">If question 2 is <strong>no</strong>, '
                    "skip questions 3–5 and go to question 6.</p>"
                ),
                *[InlineRadios(f"cssrs_{key}") for key, _ in instruments.CSSRS_QUESTIONS],
                css_id="section-cssrs",
            ),
            Fieldset(
                "Optional totals",
                Row(
                    Column("moca_total", css_class="col-md-3"),
                    Column("madrs_total", css_class="col-md-3"),
                ),
            ),
            Div(css_class="mb-3"),
        )

    def clean(self):
        cleaned = super().clean()
        for scale in (instruments.PHQ9, instruments.GAD7):
            cleaned[f"{scale.code}_items"] = [
                cleaned.get(f"{scale.code}_{i}") for i in range(1, len(scale.items) + 1)
            ]
            if all(v is None for v in cleaned[f"{scale.code}_items"]):
                cleaned[f"{scale.code}_items"] = None
        answers = {key: cleaned.get(f"cssrs_{key}") for key, _ in instruments.CSSRS_QUESTIONS}
        cleaned["cssrs_answers"] = answers if any(v is not None for v in answers.values()) else None
        cleaned["contraindications"] = {
            item.code: {
                "present": cleaned.get(f"ci_{item.code}"),
                "note": cleaned.get(f"ci_{item.code}_note", ""),
            }
            for item in self.rules.contraindications
        }
        return cleaned

    def service_fields(self) -> dict:
        return {name: self.cleaned_data.get(name) for name in ASSESSMENT_FIELDS}

    def _post_clean(self):
        # Plausibility (protocol data) and scoring are the service's job.
        pass


class SignAssessmentForm(forms.Form):
    decision = forms.ChoiceField(
        choices=[("approve", "Approve: treatment may start"), ("decline", "Do not approve")],
        widget=forms.RadioSelect,
    )
    override_reason = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        validators=[reject_control_characters],
        help_text="Required to approve despite an absolute contraindication.",
    )
    password = forms.CharField(
        label="Your password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text="Re-enter your password to sign. Signing locks the assessment.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_tag = False


class AddendumForm(forms.Form):
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "autofocus": True}),
        max_length=5000,
        validators=[reject_control_characters],
    )
    reason = forms.CharField(max_length=1000, validators=[reject_control_characters])
    password = forms.CharField(
        label="Your password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text="The addendum is signed by you.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_tag = False


class CourseForm(forms.Form):
    protocol = forms.ModelChoiceField(
        queryset=Protocol.objects.all(), widget=forms.RadioSelect, empty_label=None
    )
    indication = forms.ChoiceField(choices=TreatmentCourse.Indication.choices)
    indication_notes = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        validators=[reject_control_characters],
    )
    responsible_psychiatrist = forms.ModelChoiceField(queryset=User.objects.none())
    planned_sessions = forms.IntegerField(
        min_value=1,
        max_value=100,
        initial=6,
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )
    age_override_reason = forms.CharField(
        required=False,
        max_length=1000,
        label="Age override (prescriber only)",
        help_text="Only when the patient is below the protocol's minimum age (esketamine: 18): "
        "the prescriber's reason for treating.",
        widget=forms.Textarea(attrs={"rows": 2}),
        validators=[reject_control_characters],
    )

    def __init__(self, *args, patient, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["responsible_psychiatrist"].queryset = User.objects.filter(
            is_active=True, groups__name=Role.PSYCHIATRIST, sites=patient.home_site
        ).distinct()
        self.fields["responsible_psychiatrist"].label_from_instance = lambda u: u.printed_name
        self.helper = FormHelper()
        self.helper.form_tag = False


class CourseStatusForm(forms.Form):
    status = forms.ChoiceField(
        choices=[
            (s.value, s.label)
            for s in TreatmentCourse.Status
            if s != TreatmentCourse.Status.ASSESSMENT_PENDING
        ]
    )
    reason = forms.CharField(
        required=False, max_length=1000, validators=[reject_control_characters]
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_tag = False


class ProtocolVersionForm(forms.Form):
    """The rules editor: JSON checked against the rule schema (SPEC §G1), every problem listed
    beside the editor with the path of its faulty part; nothing is saved while one remains."""

    change_summary = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        validators=[reject_control_characters],
    )
    rules = forms.CharField(
        widget=forms.Textarea(
            attrs={
                "rows": 24,
                "class": "form-control font-monospace",
                "spellcheck": "false",
                "aria-describedby": "rule-problems",
            }
        ),
        max_length=200_000,
        help_text="The rules as JSON; checked against the rule schema.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rule_problems: list[RuleLine] = []
        self.helper = FormHelper()
        self.helper.form_tag = False

    def clean_rules(self) -> dict:
        try:
            data = json.loads(self.cleaned_data["rules"], parse_constant=_refuse_constant)
        except json.JSONDecodeError as error:
            raise ValidationError(RULES_NOT_JSON.format(error=error.msg)) from error
        except (RecursionError, ValueError) as error:
            raise ValidationError(RULES_NOT_JSON.format(error=error)) from error
        if "\\u0000" in json.dumps(data):
            raise ValidationError(RULES_NOT_JSON.format(error="a NUL character"))
        problems = rule_problems(data)
        if problems:
            self.rule_problems = [RuleLine.of(problem, data) for problem in problems]
            raise ValidationError([str(problem) for problem in problems])
        return data

    def clean(self) -> dict:
        cleaned = super().clean()
        if "rules" in self.errors:
            attrs = self.fields["rules"].widget.attrs
            attrs.update({"class": f"{attrs['class']} is-invalid", "aria-invalid": "true"})
        return cleaned


# Readable names of the rules' parts, for the problem list beside the editor.
RULE_SECTIONS = {
    "drug": "Drug",
    "routes": "Routes",
    "consent_kinds": "Consent kinds",
    "assessment_validity_days": "Assessment validity (days)",
    "required_instruments": "Required instruments",
    "contraindications": "Contraindication",
    "plausibility": "Plausibility limits",
    "fahrenheit_hint": "°F hint",
    "alerts": "Alert",
    "predose_alerts": "Pre-dose alert",
    "dose": "Dose",
    "schedule": "Required check",
    "minimum_observation_minutes": "Minimum observation (minutes)",
    "observation_anchor": "Observation counted from",
    "discharge": "Discharge",
    "followups": "Follow-up",
    "escalation": "Escalation step",
    "late_entry_minutes": "Late entry (minutes)",
    "rems_form_due_days": "REMS form due (days)",
    "rems_bp_check_code": "REMS BP check",
    "minimum_age_years": "Minimum age (years)",
    "rules": "The rules",
}
_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


@dataclass(frozen=True)
class RuleLine:
    """One problem as the editor lists it: the path, where that is in words, the message."""

    path: str
    where: str
    message: str

    @classmethod
    def of(cls, problem: RuleProblem, data: Any) -> RuleLine:
        words, node = [], data
        for index, key in _PATH_PART.findall(problem.path):
            if index:
                i = int(index)
                node = node[i] if isinstance(node, list) and i < len(node) else None
                name = _item_name(node)
                words = words or ["Item"]
                words[-1] += f" {i + 1}" + (f" “{name}”" if name else "")
            else:
                words.append(RULE_SECTIONS.get(key) if not words else key.replace("_", " "))
                words[-1] = words[-1] or key.replace("_", " ")
                node = node.get(key) if isinstance(node, dict) else None
        return cls(problem.path, " › ".join(words), problem.message)


def _item_name(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    name = node.get("label") or node.get("code") or node.get("message")
    return name[:60] if isinstance(name, str) else None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number")


def version_rules_json(version: ProtocolVersion) -> str:
    return json.dumps(version.rules, indent=2, ensure_ascii=False)
