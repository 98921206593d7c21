from __future__ import annotations

from django import template

from monitoring.evaluation import minutes_between

register = template.Library()


@register.filter
def minutes_since(start, now) -> int:
    return minutes_between(start, now)


@register.filter
def overdue(due_at, now) -> bool:
    return due_at < now


@register.filter
def as_input(field):
    """The field's widget with Bootstrap's classes, outlined in red when it has errors."""
    css = "form-control is-invalid" if field.errors else "form-control"
    return field.as_widget(attrs={"class": css})
