"""The follow-up form (SPEC §F2): scales only when due, C-SSRS since last contact, side effects."""

from __future__ import annotations

from crispy_forms.bootstrap import InlineRadios
from crispy_forms.helper import FormHelper
from crispy_forms.layout import Column, Fieldset, Layout, Row
from django import forms

from clinic.models import Role
from followups.models import FollowUp
from patients.forms import reject_control_characters
from protocols import instruments
from protocols.forms import yes_no_field
from protocols.plausibility import plausibility_errors

SIDE_EFFECTS = (
    ("urinary_frequency", "Urinary frequency"),
    ("urinary_urgency", "Urinary urgency"),
    ("urinary_pain", "Pain passing urine"),
    ("haematuria", "Blood in urine"),
    ("memory_concentration", "Memory or concentration problems"),
    ("persistent_dissociation", "Persistent dissociation"),
    ("craving_misuse", "Craving or misuse"),
)


def side_effects_reported(followup: FollowUp) -> list[str] | None:
    """The side effects answered yes, in words; None when the screen was not done."""
    answers = followup.side_effects or {}
    if not any(value is not None for value in answers.values()):
        return None
    return [label for key, label in SIDE_EFFECTS if answers.get(key)]


class FollowUpForm(forms.Form):
    contact_method = forms.ChoiceField(
        choices=[("", "— choose —"), *FollowUp.ContactMethod.choices], required=False
    )
    # The plausible range is the course's protocol version's (SPEC §M4), set in __init__.
    sbp = forms.IntegerField(
        label="SBP (mmHg)",
        required=False,
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )
    dbp = forms.IntegerField(
        label="DBP (mmHg)",
        required=False,
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )
    general_health = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        validators=[reject_control_characters],
    )
    outcome = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        validators=[reject_control_characters],
        required=False,
    )
    next_action = forms.CharField(
        required=False, max_length=1000, validators=[reject_control_characters]
    )

    def __init__(self, *args, followup: FollowUp, user, scales: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.followup, self.scales = followup, scales
        self.rules = followup.course.protocol_version.parsed if followup.course_id else None
        self._set_bp_limits()
        psychiatric = not (
            user.has_role(Role.GP) and not user.has_role(Role.PSYCHIATRIST)
        ) and followup.assigned_role not in (Role.GP, Role.ADMINISTRATOR)
        sections = [Fieldset("Contact", "contact_method")]
        for scale in (instruments.PHQ9, instruments.GAD7):
            if scale.code not in scales:
                continue
            for i, text in enumerate(scale.items, start=1):
                self.fields[f"{scale.code}_{i}"] = forms.TypedChoiceField(
                    label=f"{i}. {text}",
                    coerce=int,
                    empty_value=None,
                    required=False,
                    choices=[
                        (str(v), f"{v} {label}") for v, label in instruments.FREQUENCY_ANSWERS
                    ],
                    widget=forms.RadioSelect,
                )
            sections.append(
                Fieldset(
                    f"{scale.name} — over the last 2 weeks",
                    *[InlineRadios(f"{scale.code}_{i}") for i in range(1, len(scale.items) + 1)],
                )
            )
        self.ask_cssrs = psychiatric
        if psychiatric:
            for key, text in instruments.CSSRS_QUESTIONS:
                self.fields[f"cssrs_{key}"] = yes_no_field(instruments.cssrs_label(key, text))
            sections.append(
                Fieldset(
                    "C-SSRS since the last contact",
                    *[InlineRadios(f"cssrs_{key}") for key, _ in instruments.CSSRS_QUESTIONS],
                )
            )
        for key, label in SIDE_EFFECTS:
            self.fields[f"se_{key}"] = yes_no_field(label)
        sections.append(
            Fieldset(
                "Side effects",
                Row(
                    *[
                        Column(InlineRadios(f"se_{key}"), css_class="col-md-6")
                        for key, _ in SIDE_EFFECTS
                    ]
                ),
            )
        )
        if self.rules is None:
            # A site duty (no patient, no course): no blood pressure to record.
            del self.fields["sbp"], self.fields["dbp"]
            sections.append(Fieldset("Notes", "general_health"))
        else:
            sections.append(
                Fieldset(
                    "Physical status",
                    Row(Column("sbp", css_class="col-md-3"), Column("dbp", css_class="col-md-3")),
                    "general_health",
                )
            )
        sections.append(Fieldset("Outcome", "outcome", "next_action"))
        if followup.signed_by_psychiatrist:
            self.fields["password"] = forms.CharField(
                label="Your password",
                strip=False,
                widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
                help_text="This review is signed by you; it is then locked.",
            )
            sections.append(Fieldset("Signature", "password"))
        self.helper = FormHelper()
        self.helper.form_tag = False
        self.helper.layout = Layout(*sections)

    def _set_bp_limits(self) -> None:
        """Hints for the browser from the protocol version's limits; `clean` enforces them."""
        if self.rules is None:
            return
        for name in ("sbp", "dbp"):
            limit = self.rules.plausibility.get(name)
            if limit is not None:
                self.fields[name].widget.attrs.update({"min": limit.low, "max": limit.high})

    def clean(self) -> dict:
        data = super().clean()
        if self.rules is not None:
            values = {name: data.get(name) for name in ("sbp", "dbp") if name not in self.errors}
            for name, message in plausibility_errors(self.rules, values).items():
                self.add_error(name, message)
        return data

    def service_fields(self) -> dict:
        data = self.cleaned_data
        fields = {
            name: data.get(name)
            for name in ("contact_method", "sbp", "dbp", "general_health", "outcome", "next_action")
            if name in self.fields
        }
        for scale in (instruments.PHQ9, instruments.GAD7):
            if scale.code in self.scales:
                items = [data.get(f"{scale.code}_{i}") for i in range(1, len(scale.items) + 1)]
                fields[f"{scale.code}_items"] = items if any(v is not None for v in items) else None
        if self.ask_cssrs:
            answers = {key: data.get(f"cssrs_{key}") for key, _ in instruments.CSSRS_QUESTIONS}
            fields["cssrs_answers"] = (
                answers if any(v is not None for v in answers.values()) else None
            )
        fields["side_effects"] = {key: data.get(f"se_{key}") for key, _ in SIDE_EFFECTS}
        return fields


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
        validators=[reject_control_characters],
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_tag = False
