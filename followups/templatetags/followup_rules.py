"""Template filters that ask followups.permissions, so a page shows a form or a button only when
the service would accept it: {% load followup_rules %}{% if followup|may_complete:user %}."""

from __future__ import annotations

from django import template

from followups import permissions

register = template.Library()


@register.filter
def may_complete(followup, user) -> bool:
    return followup.state == followup.State.OPEN and permissions.may_complete_followup(
        user, followup
    )


@register.filter
def may_close(followup, user) -> bool:
    return followup.state == followup.State.OPEN and permissions.may_close_followup(user, followup)
