"""The audit viewer's filter form (SPEC §C6)."""

from __future__ import annotations

from datetime import date

from django import forms
from django.core.exceptions import ValidationError

from audit.models import AuditEvent
from audit.selectors import EventFilter, record_type_choices, staff_choices
from clinic.models import Site, User

START_AFTER_END = "The start date must not be after the end date."
DATE_RANGE = "Choose a date between 2000 and 2100."


class EventFilterForm(forms.Form):
    site = forms.ModelChoiceField(
        queryset=Site.objects.none(), required=False, empty_label="All my sites"
    )
    start = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From"
    )
    end = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To"
    )
    user = forms.ModelChoiceField(
        queryset=User.objects.none(), required=False, empty_label="Anyone", label="Staff member"
    )
    object_type = forms.ChoiceField(required=False, label="Record type")
    action = forms.ChoiceField(
        required=False, choices=[("", "Any action"), *AuditEvent.Action.choices]
    )

    def __init__(self, *args, user: User, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["site"].queryset = Site.objects.filter(pk__in=user.site_ids)
        self.fields["user"].queryset = staff_choices(user=user)
        self.fields["object_type"].choices = [("", "Any record"), *record_type_choices()]
        # Rendered in one row above the table; Bootstrap classes here, errors under each field.
        for name, bound in self.fields.items():
            css = "form-select" if isinstance(bound.widget, forms.Select) else "form-control"
            if self.is_bound and name in self.errors:
                css += " is-invalid"
                bound.widget.attrs["aria-describedby"] = f"id_{name}-error"
            bound.widget.attrs["class"] = css

    def _clean_day(self, name: str) -> date | None:
        value = self.cleaned_data.get(name)
        if value is not None and not (2000 <= value.year <= 2100):
            raise ValidationError(DATE_RANGE)
        return value

    def clean_start(self) -> date | None:
        return self._clean_day("start")

    def clean_end(self) -> date | None:
        return self._clean_day("end")

    def clean(self) -> dict:
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            self.add_error("end", START_AFTER_END)
        return data

    def event_filter(self) -> EventFilter:
        data = self.cleaned_data
        return EventFilter(
            site_id=data["site"].pk if data.get("site") else None,
            start=data.get("start"),
            end=data.get("end"),
            user_id=data["user"].pk if data.get("user") else None,
            object_type=data.get("object_type") or "",
            action=data.get("action") or "",
        )
