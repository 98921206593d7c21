"""The compliance dashboard's filter: one of the administrator's sites and a range of days."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from django import forms
from django.core.exceptions import ValidationError

from clinic.models import Site, User
from compliance.selectors import Scope

DEFAULT_DAYS = 28
MAX_DAYS = 366
START_AFTER_END = "The start date must not be after the end date."
RANGE_TOO_LONG = f"Choose a range of at most {MAX_DAYS} days."
DATE_BOUNDS = "Choose a date between 2000 and 2100."
NOT_YOUR_SITE = "Choose one of your sites."
SHOW_VIOLATIONS = "violations"
SHOW_ALL = "all"


class ComplianceFilterForm(forms.Form):
    site = forms.TypedChoiceField(coerce=int, error_messages={"invalid_choice": NOT_YOUR_SITE})
    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, data: dict, *, user: User, sites: list[Site], **kwargs) -> None:
        super().__init__(data, **kwargs)
        self.sites = {site.pk: site for site in sites}
        self.fields["site"].choices = [(site.pk, site.name) for site in sites]
        # Rendered in one row above the figures; errors under each field, linked for readers.
        for name, field in self.fields.items():
            css = "form-select" if isinstance(field.widget, forms.Select) else "form-control"
            if name in self.errors:
                css += " is-invalid"
                field.widget.attrs["aria-describedby"] = f"id_{name}-error"
                field.widget.attrs["aria-invalid"] = "true"
            field.widget.attrs["class"] = css

    @staticmethod
    def defaults(*, site: Site, today: date) -> dict[str, str]:
        """The last 28 days of the site's calendar, today included."""
        return {
            "site": str(site.pk),
            "start": (today - timedelta(days=DEFAULT_DAYS - 1)).isoformat(),
            "end": today.isoformat(),
        }

    def _clean_day(self, name: str) -> date:
        value = self.cleaned_data[name]
        if not 2000 <= value.year <= 2100:
            raise ValidationError(DATE_BOUNDS)
        return value

    def clean_start(self) -> date:
        return self._clean_day("start")

    def clean_end(self) -> date:
        return self._clean_day("end")

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end:
            if start > end:
                self.add_error("end", START_AFTER_END)
            elif (end - start).days + 1 > MAX_DAYS:
                self.add_error("start", RANGE_TOO_LONG)
        return data

    def scope(self, *, now: datetime) -> Scope:
        data = self.cleaned_data
        return Scope(site=self.sites[data["site"]], start=data["start"], end=data["end"], now=now)


class ComplianceListForm(ComplianceFilterForm):
    show = forms.ChoiceField(
        choices=[(SHOW_ALL, "All records, violations first"), (SHOW_VIOLATIONS, "Violations only")],
        required=False,
    )

    @staticmethod
    def defaults(*, site: Site, today: date) -> dict[str, str]:
        return {**ComplianceFilterForm.defaults(site=site, today=today), "show": SHOW_ALL}
