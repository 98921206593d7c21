"""Object access for Step 1 records: 404 outside the user's sites, 403 without the right."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from clinic.models import User
from protocols.models import Assessment, Protocol, ProtocolVersion, TreatmentCourse


def _require(user: User, permission: str) -> None:
    if not user.has_perm(permission):
        raise PermissionDenied


def get_course_for_user(
    *, user: User, course_id: int, permission: str = "protocols.view_treatmentcourse"
) -> TreatmentCourse:
    course = get_object_or_404(
        TreatmentCourse.objects.select_related(
            "patient__home_site", "protocol_version__protocol", "responsible_psychiatrist"
        ),
        pk=course_id,
        patient__home_site_id__in=user.site_ids,
    )
    _require(user, permission)
    return course


def get_assessment_for_user(
    *, user: User, assessment_id: int, permission: str = "protocols.view_assessment"
) -> Assessment:
    assessment = get_object_or_404(
        Assessment.objects.select_related(
            "patient__home_site",
            "course__protocol_version__protocol",
            "course__responsible_psychiatrist",
            "created_by",
            "submitted_by",
        ),
        pk=assessment_id,
        patient__home_site_id__in=user.site_ids,
    )
    _require(user, permission)
    return assessment


def get_protocol_for_user(*, user: User, protocol_id: int, permission: str) -> Protocol:
    _require(user, permission)
    return get_object_or_404(Protocol, pk=protocol_id)


def get_version_for_user(*, user: User, version_id: int, permission: str) -> ProtocolVersion:
    """Protocols are chain-wide clinic policy; only the permission matters."""
    _require(user, permission)
    return get_object_or_404(
        ProtocolVersion.objects.select_related("protocol", "published_by", "created_by"),
        pk=version_id,
    )
