"""Object access for follow-ups: 404 outside the user's sites, 403 without the right; and who
may close a follow-up, decided once (SPEC §U, §F2).

`completion_refusal` is the one rule for completing (and signing) a follow-up and
`closing_refusal` the one for recording it as missed: the services raise PermissionDenied with
the reason, the views answer 403 and the templates show the form only when they return None.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from clinic.models import Role, User
from followups.models import FollowUp

COMPLETE_PERMISSION = "followups.complete_followup"
SIGN_PERMISSION = "followups.sign_followup"

NOT_ACTIVE = "Inactive accounts cannot record follow-ups."
OTHER_SITE = "This follow-up belongs to another site."
NO_COMPLETE_PERMISSION = "Your roles do not record follow-ups."
WRONG_ROLE = "This follow-up is for the {role} role."
SIGNED_BY_PSYCHIATRIST = "This review is signed by a psychiatrist."


def get_followup_for_user(
    *, user: User, followup_id: int, permission: str = "followups.view_followup"
) -> FollowUp:
    followup = get_object_or_404(
        FollowUp.objects.select_related(
            "patient__home_site",
            "course__responsible_psychiatrist",
            "course__protocol_version",
            "site",
            "completed_by",
        ),
        pk=followup_id,
        site_id__in=user.site_ids,
    )
    if not user.has_perm(permission):
        raise PermissionDenied
    return followup


def closing_refusal(user: User, followup: FollowUp) -> str | None:
    """Why `user` may not close `followup` (complete it or record it missed); None if they may.

    The assigned role closes it; a psychiatrist may close any clinical one (not the
    administrators' duties); always an active member of its site holding the permission.
    Whether it is still open is the record's state, not the person's right: the services check
    it under the row lock, and the page shows a closed one read-only.
    """
    if not user.is_active:
        return NOT_ACTIVE
    if followup.site_id not in user.site_ids:
        return OTHER_SITE
    if not user.has_perm(COMPLETE_PERMISSION):
        return NO_COMPLETE_PERMISSION
    roles = user.role_names
    if followup.assigned_role not in roles and not (
        Role.PSYCHIATRIST in roles and followup.assigned_role != Role.ADMINISTRATOR
    ):
        return WRONG_ROLE.format(role=followup.assigned_role)
    return None


def completion_refusal(user: User, followup: FollowUp) -> str | None:
    """Why `user` may not complete `followup`; None if they may. A signed psychiatric review
    is completed only by a psychiatrist who may sign reviews (SPEC §U, §S)."""
    refusal = closing_refusal(user, followup)
    if refusal is not None:
        return refusal
    if followup.signed_by_psychiatrist and not (
        user.has_role(Role.PSYCHIATRIST) and user.has_perm(SIGN_PERMISSION)
    ):
        return SIGNED_BY_PSYCHIATRIST
    return None


def may_complete_followup(user: User, followup: FollowUp) -> bool:
    """Whether `user` may complete (and, for a review, sign) `followup`; the reason why not is
    `completion_refusal(user, followup)`."""
    return completion_refusal(user, followup) is None


def may_close_followup(user: User, followup: FollowUp) -> bool:
    """Whether `user` may record `followup` as missed (`closing_refusal` says why not)."""
    return closing_refusal(user, followup) is None


def check_may_complete(user: User, followup: FollowUp) -> None:
    refusal = completion_refusal(user, followup)
    if refusal is not None:
        raise PermissionDenied(refusal)


def check_may_close(user: User, followup: FollowUp) -> None:
    refusal = closing_refusal(user, followup)
    if refusal is not None:
        raise PermissionDenied(refusal)
