from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def rule_value(value) -> str:
    """A rule value for reading: ranges as low–high, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "–".join(str(v) for v in value)
    return str(value)


@register.filter
def minutes(delta) -> str:
    total = int(delta.total_seconds() // 60)
    hours, mins = divmod(total, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {mins} min" if hours else f"{mins} min"
