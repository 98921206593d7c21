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
