"""Forms for patients and consent. Error texts are module constants; rules stay in services."""

from __future__ import annotations

import re
from datetime import date, timedelta

from crispy_forms.helper import FormHelper
from crispy_forms.layout import Column, Fieldset, Layout, Row, Submit
from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.utils import timezone

from clinic.models import Role, Site, User
from patients.models import ConsentKind, ConsentRecord, ConsentTemplate, Patient
from patients.scans import MAX_SCAN_BYTES, sniff_scan_content_type
from patients.services import (
    CONSENT_MAX_AGE_DAYS,
    PATIENT_FIELDS,
    SIGNED_TOO_LONG_AGO,
    weight_error,
)

MRN_FORMAT = "Use letters, digits, '-', '/' or '.' only (at most 32)."
MRN_TAKEN = "A patient with this record number is already registered at {site}."
DOB_FUTURE = "The date of birth cannot be in the future."
DOB_TOO_OLD = "Check the year: a date of birth before 1900 is not plausible."
CONTROL_CHARACTERS = "Remove the control characters from this text."
WEIGHT_NEEDS_DATE = "Give the date the weight was measured."
DATE_NEEDS_WEIGHT = "Give the weight measured on that date, or clear the date."
MEASURED_IN_FUTURE = "The measurement date cannot be in the future."
SCAN_REQUIRED = "A wet signature on paper needs its scan attached."
REASON_REQUIRED = "Give a reason; it is kept in the record's history."

_MRN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9./-]{0,31}$")
# C0 and C1 controls, and bidirectional overrides that can make a name display reversed.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def reject_control_characters(value: str) -> None:
    if isinstance(value, str) and _CONTROL_RE.search(value):
        raise ValidationError(CONTROL_CHARACTERS, code="control_characters")


class DateInput(forms.DateInput):
    input_type = "date"

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%d", **kwargs)


class DateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%dT%H:%M", **kwargs)


class PatientForm(forms.ModelForm):
    class Meta:
        model = Patient
        fields = PATIENT_FIELDS
        widgets = {
            "date_of_birth": DateInput(),
            "weight_measured_on": DateInput(),
            "address": forms.Textarea(attrs={"rows": 2}),
            "weight_kg": forms.NumberInput(attrs={"inputmode": "decimal", "step": "0.1"}),
        }

    def __init__(self, *args, site: Site, **kwargs):
        super().__init__(*args, **kwargs)
        self.site = site
        for field in self.fields.values():
            if isinstance(field, forms.CharField):
                field.validators.append(reject_control_characters)
        self.fields["mrn"].widget.attrs.update(autofocus=True, autocomplete="off")
        self.helper = FormHelper()
        self.helper.attrs = {"novalidate": ""}  # our field errors, not the browser's pop-ups
        self.helper.layout = Layout(
            Fieldset(
                "Identity",
                Row(
                    Column("mrn", css_class="col-md-4"),
                    Column("family_name", css_class="col-md-4"),
                    Column("given_name", css_class="col-md-4"),
                ),
                Row(
                    Column("date_of_birth", css_class="col-md-6"),
                    Column("sex", css_class="col-md-6"),
                ),
            ),
            Fieldset(
                "Contact",
                Row(Column("phone", css_class="col-md-6"), Column("email", css_class="col-md-6")),
                "address",
                Row(
                    Column("emergency_contact_name", css_class="col-md-6"),
                    Column("emergency_contact_phone", css_class="col-md-6"),
                ),
                "usual_escort",
                Row(
                    Column("gp_name", css_class="col-md-6"),
                    Column("gp_contact", css_class="col-md-6"),
                ),
            ),
            Fieldset(
                "Weight",
                Row(
                    Column("weight_kg", css_class="col-md-6"),
                    Column("weight_measured_on", css_class="col-md-6"),
                ),
            ),
            Submit("save", "Save patient"),
        )

    def clean_mrn(self) -> str:
        mrn = self.cleaned_data["mrn"].strip().upper()
        if not _MRN_RE.match(mrn):
            raise ValidationError(MRN_FORMAT)
        taken = Patient.objects.active().filter(home_site=self.site, mrn=mrn)
        if self.instance.pk:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise ValidationError(MRN_TAKEN.format(site=self.site.name))
        return mrn

    def clean_date_of_birth(self) -> date:
        born = self.cleaned_data["date_of_birth"]
        if born > timezone.localdate():
            raise ValidationError(DOB_FUTURE)
        if born.year < 1900:
            raise ValidationError(DOB_TOO_OLD)
        return born

    def clean_weight_kg(self):
        weight = self.cleaned_data.get("weight_kg")
        error = weight_error(weight)
        if error:
            raise ValidationError(error)
        return weight

    def clean_weight_measured_on(self):
        day = self.cleaned_data.get("weight_measured_on")
        if day is not None and day > timezone.localdate():
            raise ValidationError(MEASURED_IN_FUTURE)
        return day

    def clean(self):
        cleaned = super().clean()
        weight, day = cleaned.get("weight_kg"), cleaned.get("weight_measured_on")
        if weight is not None and day is None and "weight_measured_on" not in self.errors:
            self.add_error("weight_measured_on", WEIGHT_NEEDS_DATE)
        if day is not None and weight is None and "weight_kg" not in self.errors:
            self.add_error("weight_kg", DATE_NEEDS_WEIGHT)
        return cleaned

    def _post_clean(self):
        # Model validation happens in the service, with the site set; skip the partial one here.
        pass


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "autofocus": True}),
        max_length=1000,
        validators=[reject_control_characters],
        error_messages={"required": REASON_REQUIRED},
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_tag = False


class ConsentRecordForm(forms.Form):
    template = forms.ModelChoiceField(
        label="Consent document (version)",
        queryset=ConsentTemplate.objects.none(),
        empty_label="— choose —",
    )
    # No default: the witness states how the patient signed.
    signature_method = forms.ChoiceField(
        choices=[("", "— choose —"), *ConsentRecord.SignatureMethod.choices]
    )
    signed_at = forms.DateTimeField(
        label="Signed at", widget=DateTimeInput(), help_text="In the site's local time."
    )
    valid_until = forms.DateField(
        required=False,
        widget=DateInput(),
        help_text="Leave empty to use the document's validity period.",
    )
    prescriber = forms.ModelChoiceField(
        queryset=User.objects.none(),
        required=False,
        help_text="Required for esketamine REMS enrollment: the prescriber co-signs.",
    )
    scan = forms.FileField(
        required=False,
        help_text=f"PDF, PNG or JPEG, at most {MAX_SCAN_BYTES // (1024 * 1024)} MB.",
        widget=forms.ClearableFileInput(attrs={"accept": ".pdf,.png,.jpg,.jpeg"}),
    )

    def __init__(self, *args, patient: Patient, **kwargs):
        super().__init__(*args, **kwargs)
        self.patient = patient
        self.fields["template"].queryset = ConsentTemplate.objects.published().order_by(
            "kind", "-version"
        )
        self.fields["template"].widget.attrs["autofocus"] = True
        self.fields["prescriber"].queryset = User.objects.filter(
            is_active=True, groups__name=Role.PSYCHIATRIST, sites=patient.home_site
        ).distinct()
        self.fields["prescriber"].label_from_instance = lambda user: user.printed_name
        self.initial.setdefault("signed_at", timezone.localtime().replace(second=0, microsecond=0))
        self.helper = FormHelper()
        self.helper.form_tag = False
        self.helper.layout = Layout(
            "template",
            Row(
                Column("signature_method", css_class="col-md-6"),
                Column("signed_at", css_class="col-md-6"),
            ),
            Row(
                Column("valid_until", css_class="col-md-6"),
                Column("prescriber", css_class="col-md-6"),
            ),
            "scan",
        )

    def clean_signed_at(self):
        signed_at = self.cleaned_data["signed_at"]
        if signed_at > timezone.now() + timedelta(minutes=1):
            raise ValidationError("The signing time cannot be in the future.")
        if signed_at < timezone.now() - timedelta(days=CONSENT_MAX_AGE_DAYS):
            raise ValidationError(SIGNED_TOO_LONG_AGO)
        return signed_at

    def clean_scan(self):
        scan = self.cleaned_data.get("scan")
        if scan:
            sniff_scan_content_type(scan)
        return scan

    def clean(self):
        cleaned = super().clean()
        template = cleaned.get("template")
        if (
            template is not None
            and template.kind == ConsentKind.ESKETAMINE_REMS
            and not cleaned.get("prescriber")
            and "prescriber" not in self.errors
        ):
            self.add_error("prescriber", "Esketamine REMS enrollment needs the prescriber.")
        if (
            cleaned.get("signature_method") == ConsentRecord.SignatureMethod.WET_SCANNED
            and not cleaned.get("scan")
            and "scan" not in self.errors
        ):
            self.add_error("scan", SCAN_REQUIRED)
        return cleaned


class ConsentTemplateForm(forms.ModelForm):
    class Meta:
        model = ConsentTemplate
        fields = ("kind", "title", "text", "validity_days", "requires_reconsent")
        widgets = {"text": forms.Textarea(attrs={"rows": 16})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            del self.fields["kind"]  # a version belongs to its kind for good
        for field in ("title", "text"):
            self.fields[field].validators.append(reject_control_characters)
        self.fields["validity_days"].validators += [MinValueValidator(1), MaxValueValidator(3650)]
        self.fields["validity_days"].widget.attrs.update(min=1, max=3650)
        self.helper = FormHelper()
        self.helper.add_input(Submit("save", "Save draft"))

    def _post_clean(self):
        # The service numbers the version and validates the model.
        pass
