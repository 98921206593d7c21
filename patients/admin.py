"""Clinical records in the admin: read-only, scoped to the reader's sites."""

from __future__ import annotations

from django.contrib import admin

from clinic.admin import ClinicalReadOnlyAdmin
from patients.models import ConsentRecord, ConsentTemplate, Patient


@admin.register(Patient)
class PatientAdmin(ClinicalReadOnlyAdmin):
    list_display = ("__str__", "mrn", "home_site", "voided_at")
    list_filter = ("home_site",)
    search_fields = ("mrn", "family_name")

    def get_queryset(self, request):
        return super().get_queryset(request).filter(home_site_id__in=request.user.site_ids)


@admin.register(ConsentRecord)
class ConsentRecordAdmin(ClinicalReadOnlyAdmin):
    list_display = ("patient", "template", "signed_at", "valid_until", "withdrawn_at")
    list_select_related = ("patient", "template")

    def get_queryset(self, request):
        return super().get_queryset(request).filter(patient__home_site_id__in=request.user.site_ids)


@admin.register(ConsentTemplate)
class ConsentTemplateAdmin(ClinicalReadOnlyAdmin):
    """Drafts are written and published in the app, where the service keeps versions immutable."""

    list_display = ("__str__", "title", "published_at")
