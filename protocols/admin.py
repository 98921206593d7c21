"""Step 1 records in the admin: read-only (writes go through services), scoped to sites."""

from __future__ import annotations

from django.contrib import admin

from clinic.admin import ClinicalReadOnlyAdmin
from protocols.models import Assessment, Protocol, ProtocolVersion, TreatmentCourse


@admin.register(Protocol)
class ProtocolAdmin(ClinicalReadOnlyAdmin):
    list_display = ("name", "slug")


@admin.register(ProtocolVersion)
class ProtocolVersionAdmin(ClinicalReadOnlyAdmin):
    """Versions are drafted and published in the app, where the rules are checked."""

    list_display = ("__str__", "published_at", "published_by")
    list_select_related = ("protocol", "published_by")


@admin.register(TreatmentCourse)
class TreatmentCourseAdmin(ClinicalReadOnlyAdmin):
    list_display = ("patient", "protocol_version", "status", "created_at")
    list_select_related = ("patient", "protocol_version__protocol")

    def get_queryset(self, request):
        courses = super().get_queryset(request)
        return courses.filter(patient__home_site_id__in=request.user.site_ids)


@admin.register(Assessment)
class AssessmentAdmin(ClinicalReadOnlyAdmin):
    list_display = ("patient", "status", "phq9_total", "gad7_total", "cssrs_risk", "signed_at")
    list_select_related = ("patient",)
    list_filter = ("status",)

    def get_queryset(self, request):
        assessments = super().get_queryset(request)
        return assessments.filter(patient__home_site_id__in=request.user.site_ids)
