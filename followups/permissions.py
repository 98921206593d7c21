"""Object access for follow-ups: 404 outside the user's sites, 403 without the right."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from clinic.models import User
from followups.models import FollowUp


def get_followup_for_user(
    *, user: User, followup_id: int, permission: str = "followups.view_followup"
) -> FollowUp:
    followup = get_object_or_404(
        FollowUp.objects.select_related(
            "patient__home_site", "course__responsible_psychiatrist", "site", "completed_by"
        ),
        pk=followup_id,
        site_id__in=user.site_ids,
    )
    if not user.has_perm(permission):
        raise PermissionDenied
    return followup
