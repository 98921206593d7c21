"""Administration of sites and staff. History is shown read-only; nothing is reverted."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from simple_history.admin import SimpleHistoryAdmin

from clinic.models import Heartbeat, Site, User


class ReadOnlyHistoryAdmin(SimpleHistoryAdmin):
    """History pages without revert (SIMPLE_HISTORY_REVERT_DISABLED) and without deletion."""

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


class ClinicalReadOnlyAdmin(ReadOnlyHistoryAdmin):
    """Clinical records change only through services (history, reasons, locking)."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Site)
class SiteAdmin(ReadOnlyHistoryAdmin):
    list_display = ("name", "time_zone", "is_active")
    search_fields = ("name",)


@admin.register(User)
class StaffAdmin(UserAdmin, ReadOnlyHistoryAdmin):
    list_display = ("username", "first_name", "last_name", "is_active", "is_staff")
    list_filter = ("is_active", "groups", "sites")
    filter_horizontal = ("groups", "user_permissions", "sites")
    fieldsets = (
        *UserAdmin.fieldsets,
        ("Vigil", {"fields": ("sites", "is_service_account")}),
    )
    readonly_fields = ("is_service_account", "last_login", "date_joined")


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ("name", "beat_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
