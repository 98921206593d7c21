"""Form helpers shared by every app."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.http import HttpRequest


def apply_errors(form: forms.Form, error: ValidationError) -> None:
    """Put a service's ValidationError on the form: on its field where it names one."""
    if hasattr(error, "error_dict"):
        for field, errors in error.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, error)


def form_data(request: HttpRequest):
    """Bind on POST even when the body is empty, so an empty submit shows its errors."""
    return request.POST if request.method == "POST" else None


def form_files(request: HttpRequest):
    return request.FILES if request.method == "POST" else None
