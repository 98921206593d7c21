"""Step 2 records in the admin: read-only (writes go through services), scoped to sites."""

from __future__ import annotations

from django.contrib import admin

from clinic.admin import ClinicalReadOnlyAdmin
from monitoring.models import (
    Alert,
    ControlledSubstanceEntry,
    DrugLot,
    Incident,
    TreatmentSession,
    VitalReading,
)


class SiteScopedAdmin(ClinicalReadOnlyAdmin):
    site_path = "site_id__in"

    def get_queryset(self, request):
        return super().get_queryset(request).filter(**{self.site_path: request.user.site_ids})


@admin.register(TreatmentSession)
class TreatmentSessionAdmin(SiteScopedAdmin):
    list_display = ("patient", "site", "chair", "status", "scheduled_at")
    list_select_related = ("patient", "site")
    list_filter = ("status",)


@admin.register(VitalReading)
class VitalReadingAdmin(SiteScopedAdmin):
    site_path = "session__site_id__in"
    list_display = ("session", "measured_at", "sbp", "dbp", "hr", "spo2", "entered_in_error_at")


@admin.register(Alert)
class AlertAdmin(SiteScopedAdmin):
    site_path = "session__site_id__in"
    list_display = ("session", "level", "message", "raised_at", "acknowledged_at")


@admin.register(DrugLot)
class DrugLotAdmin(SiteScopedAdmin):
    list_display = ("drug", "lot_number", "site", "expires_on")


@admin.register(ControlledSubstanceEntry)
class ControlledSubstanceEntryAdmin(admin.ModelAdmin):
    """The register is append-only (no history to show): view only."""

    list_display = ("at", "lot", "kind", "amount_mg", "balance_mg", "by", "witness")

    def get_queryset(self, request):
        return super().get_queryset(request).filter(lot__site_id__in=request.user.site_ids)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Incident)
class IncidentAdmin(SiteScopedAdmin):
    list_display = ("kind", "site", "opened_at")
