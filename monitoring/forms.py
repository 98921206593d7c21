"""Step 2 forms: keyboard-first for chairside entry (numeric input modes, Enter submits)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from crispy_forms.helper import FormHelper
from crispy_forms.layout import Column, Layout, Row
from django import forms
from django.utils import timezone

from clinic.models import Role, User
from monitoring.models import DrugLot, Observation, TreatmentSession
from patients.forms import DateInput, DateTimeInput, reject_control_characters

NUMERIC = {"inputmode": "numeric", "autocomplete": "off"}
DECIMAL = {"inputmode": "decimal", "autocomplete": "off"}


def _helper() -> FormHelper:
    helper = FormHelper()
    helper.form_tag = False
    return helper


def clinicians_of(site, *roles: Role):
    return User.objects.filter(
        is_active=True, sites=site, groups__name__in=[r.value for r in roles]
    ).distinct()


class ReasonField(forms.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 1000)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 2}))
        super().__init__(validators=[reject_control_characters], **kwargs)


class ScheduleForm(forms.Form):
    scheduled_at = forms.DateTimeField(widget=DateTimeInput())
    chair = forms.CharField(
        label="Chair or room", max_length=40, validators=[reject_control_characters]
    )
    supervising_clinician = forms.ModelChoiceField(queryset=User.objects.none())

    def __init__(self, *args, patient, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["supervising_clinician"].queryset = clinicians_of(
            patient.home_site, Role.ANESTHESIOLOGIST, Role.PSYCHIATRIST
        )
        self.fields["supervising_clinician"].label_from_instance = lambda u: u.printed_name
        self.initial.setdefault(
            "scheduled_at", timezone.localtime().replace(second=0, microsecond=0)
        )
        self.helper = _helper()


class CheckInForm(forms.Form):
    escort_confirmed = forms.BooleanField(required=False, label="Escort / transport home confirmed")
    escort_details = forms.CharField(
        required=False,
        max_length=200,
        validators=[reject_control_characters],
        help_text="Who takes the patient home, and how.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = _helper()

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("escort_confirmed") and not cleaned.get("escort_details", "").strip():
            self.add_error("escort_details", "Name who takes the patient home, and how.")
        return cleaned


class PredoseDecisionForm(forms.Form):
    decision = forms.ChoiceField(
        choices=TreatmentSession.PredoseDecision.choices, widget=forms.RadioSelect
    )
    reason = ReasonField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = _helper()


class DoseForm(forms.Form):
    lot = forms.ModelChoiceField(queryset=DrugLot.objects.none())
    dose_mg = forms.DecimalField(
        label="Dose (mg)",
        max_digits=7,
        decimal_places=2,
        min_value=0,
        widget=forms.NumberInput(attrs=DECIMAL),
    )
    volume_ml = forms.DecimalField(
        label="Volume (mL)",
        max_digits=7,
        decimal_places=2,
        min_value=0,
        widget=forms.NumberInput(attrs=DECIMAL),
    )
    started_at = forms.DateTimeField(label="Infusion start / first device", widget=DateTimeInput())
    prescriber = forms.ModelChoiceField(
        queryset=User.objects.none(), help_text="The prescriber present on site."
    )
    override_reason = ReasonField(
        required=False,
        label="Prescriber's override reason",
        help_text="Only for an IV dose outside the protocol's range.",
    )

    def __init__(self, *args, session: TreatmentSession, **kwargs):
        super().__init__(*args, **kwargs)
        today = timezone.localdate()
        self.fields["lot"].queryset = DrugLot.objects.filter(
            site=session.site, drug=session.rules.drug, expires_on__gte=today
        )
        self.fields["prescriber"].queryset = clinicians_of(session.site, Role.PSYCHIATRIST)
        self.fields["prescriber"].label_from_instance = lambda u: u.printed_name
        self.initial.setdefault("started_at", timezone.localtime().replace(second=0, microsecond=0))
        self.helper = _helper()
        self.helper.layout = Layout(
            Row(
                Column("lot", css_class="col-md-4"),
                Column("dose_mg", css_class="col-md-4"),
                Column("volume_ml", css_class="col-md-4"),
            ),
            Row(
                Column("started_at", css_class="col-md-6"),
                Column("prescriber", css_class="col-md-6"),
            ),
            "override_reason",
        )


class DoseCompleteForm(forms.Form):
    ended_at = forms.DateTimeField(label="Infusion end / last device", widget=DateTimeInput())

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial.setdefault("ended_at", timezone.localtime().replace(second=0, microsecond=0))
        self.helper = _helper()


class VitalsForm(forms.Form):
    """One row of the flowsheet. Tab moves field to field; Enter saves."""

    sbp = forms.IntegerField(
        label="SBP", required=False, widget=forms.NumberInput(attrs={**NUMERIC, "autofocus": True})
    )
    dbp = forms.IntegerField(label="DBP", required=False, widget=forms.NumberInput(attrs=NUMERIC))
    hr = forms.IntegerField(label="HR", required=False, widget=forms.NumberInput(attrs=NUMERIC))
    rr = forms.IntegerField(label="RR", required=False, widget=forms.NumberInput(attrs=NUMERIC))
    spo2 = forms.IntegerField(
        label="SpO2 %", required=False, widget=forms.NumberInput(attrs=NUMERIC)
    )
    temperature_c = forms.DecimalField(
        label="Temp °C",
        required=False,
        max_digits=4,
        decimal_places=1,
        widget=forms.NumberInput(attrs=DECIMAL),
    )
    # A number, not a select: Enter in the last field of the set must save it.
    moaas = forms.IntegerField(
        label="MOAA/S",
        required=False,
        min_value=0,
        max_value=5,
        widget=forms.NumberInput(attrs={**NUMERIC, "min": 0, "max": 5}),
    )
    measured_at = forms.DateTimeField(
        label="Measured at",
        required=False,
        widget=DateTimeInput(),
        help_text="Leave empty for now; back-date if taken earlier.",
    )
    client_token = forms.UUIDField(widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial.setdefault("client_token", uuid.uuid4())
        for name in ("sbp", "dbp", "hr", "rr", "spo2"):
            self.fields[name].widget.attrs.update(min=0, max=999)


class ReasonForm(forms.Form):
    reason = ReasonField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = _helper()


class AcknowledgeForm(forms.Form):
    action_taken = ReasonField(label="Action taken")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = _helper()


class ObservationForm(forms.Form):
    kind = forms.ChoiceField(choices=Observation.Kind.choices)
    observed_at = forms.DateTimeField(
        required=False, widget=DateTimeInput(), help_text="Leave empty for now."
    )
    cadss_total = forms.IntegerField(
        label="CADSS total",
        required=False,
        min_value=0,
        max_value=92,
        widget=forms.NumberInput(attrs=NUMERIC),
    )
    text = forms.CharField(
        label="Observation",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        validators=[reject_control_characters],
    )
    event_type = forms.CharField(
        required=False, max_length=100, validators=[reject_control_characters]
    )
    severity = forms.ChoiceField(required=False, choices=[("", "—"), *Observation.Severity.choices])
    action = forms.CharField(
        required=False, max_length=1000, validators=[reject_control_characters]
    )
    outcome = forms.CharField(
        required=False, max_length=1000, validators=[reject_control_characters]
    )
    serious = forms.BooleanField(required=False, label="Serious adverse event (REMS report)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = _helper()


ALDRETE = [("2", "2"), ("1", "1"), ("0", "0")]


class DischargeForm(forms.Form):
    aldrete_activity = forms.TypedChoiceField(
        label="Activity",
        coerce=int,
        choices=ALDRETE,
        widget=forms.RadioSelect,
        help_text="2 moves 4 limbs · 1 moves 2 limbs · 0 moves none",
    )
    aldrete_respiration = forms.TypedChoiceField(
        label="Respiration",
        coerce=int,
        choices=ALDRETE,
        widget=forms.RadioSelect,
        help_text="2 breathes deeply, coughs · 1 dyspnoea · 0 apnoea",
    )
    aldrete_circulation = forms.TypedChoiceField(
        label="Circulation",
        coerce=int,
        choices=ALDRETE,
        widget=forms.RadioSelect,
        help_text="2 BP within 20 % of baseline · 1 within 20–50 % · 0 beyond 50 %",
    )
    aldrete_consciousness = forms.TypedChoiceField(
        label="Consciousness",
        coerce=int,
        choices=ALDRETE,
        widget=forms.RadioSelect,
        help_text="2 fully awake · 1 arousable · 0 not responding",
    )
    aldrete_spo2 = forms.TypedChoiceField(
        label="SpO2",
        coerce=int,
        choices=ALDRETE,
        widget=forms.RadioSelect,
        help_text="2 > 92 % on room air · 1 needs O2 · 0 < 90 % with O2",
    )
    moaas = forms.TypedChoiceField(
        label="MOAA/S now", coerce=int, choices=[(str(v), str(v)) for v in range(5, -1, -1)]
    )
    escort_present = forms.BooleanField(required=False, label="Escort present")
    no_driving_instruction_given = forms.BooleanField(
        required=False, label="Told: no driving until the next day after sleep"
    )
    prescriber_decision = forms.CharField(
        required=False, max_length=1000, validators=[reject_control_characters]
    )
    ready_to_leave_minutes = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=600,
        label="Ready to leave after (min)",
        help_text="REMS: when the patient would have been ready without the 2-hour rule.",
    )
    notes = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        validators=[reject_control_characters],
    )
    disagreement_reason = forms.CharField(
        required=False,
        max_length=2000,
        label="Reason the criteria differ from the recorded readings",
        help_text="Only when an entered score differs from the latest charted SpO2, MOAA/S or "
        "blood pressure: the discharge keeps both and your reason.",
        widget=forms.Textarea(attrs={"rows": 2}),
        validators=[reject_control_characters],
    )
    password = forms.CharField(
        label="Your password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text="Re-enter your password to sign the discharge.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = _helper()

    def discharge_values(self) -> dict:
        return {k: v for k, v in self.cleaned_data.items() if k != "password"}


class LotForm(forms.Form):
    drug = forms.ChoiceField(choices=DrugLot.Drug.choices)
    lot_number = forms.CharField(max_length=40, validators=[reject_control_characters])
    concentration_mg_per_ml = forms.DecimalField(
        label="Concentration (mg/mL)", max_digits=6, decimal_places=2, min_value=Decimal("0.01")
    )
    expires_on = forms.DateField(widget=DateInput())
    received_mg = forms.DecimalField(
        label="Received (mg)", max_digits=9, decimal_places=2, min_value=Decimal("0.01")
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = _helper()


class WasteForm(forms.Form):
    amount_mg = forms.DecimalField(
        label="Amount wasted (mg)",
        max_digits=9,
        decimal_places=2,
        min_value=Decimal("0.01"),
        widget=forms.NumberInput(attrs=DECIMAL),
    )
    reason = ReasonField()
    witness = forms.ModelChoiceField(
        queryset=User.objects.none(), help_text="A different staff member who saw the waste."
    )
    witness_password = forms.CharField(
        label="Witness's password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
    )

    def __init__(self, *args, site, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["witness"].queryset = clinicians_of(
            site, Role.NURSE, Role.PSYCHIATRIST, Role.ANESTHESIOLOGIST
        )
        self.fields["witness"].label_from_instance = lambda u: u.printed_name
        self.helper = _helper()
