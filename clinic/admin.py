"""Administration of sites and staff. History is shown read-only; nothing is reverted."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.http import Http404
from simple_history.admin import SimpleHistoryAdmin

from clinic.models import STAFF_HISTORY, Heartbeat, Signature, Site, User
from clinic.services import attribute


class ReadOnlyHistoryAdmin(SimpleHistoryAdmin):
    """History pages without revert (SIMPLE_HISTORY_REVERT_DISABLED) and without deletion.

    simple-history's history views read history rows directly; they answer 404 here unless the
    record is in the reader's scoped queryset (SPEC §U: other sites' records do not exist).
    """

    def _require_in_scope(self, request, object_id) -> None:
        if not self.get_queryset(request).filter(pk=unquote(object_id)).exists():
            raise Http404

    def history_view(self, request, object_id, extra_context=None):
        self._require_in_scope(request, object_id)
        return super().history_view(request, object_id, extra_context=extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        self._require_in_scope(request, object_id)
        # simple-history saves a POSTed past version whatever REVERT_DISABLED says: the page
        # only shows a version here, nothing is ever reverted (SPEC §C2).
        if request.method != "GET":
            raise PermissionDenied
        return super().history_form_view(
            request, object_id, version_id, extra_context=extra_context
        )

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


admin.site.site_header = "Vigil administration"
admin.site.site_title = "Vigil administration"
admin.site.index_title = "Sites, staff and records"


@admin.register(Site)
class SiteAdmin(ReadOnlyHistoryAdmin):
    """Administrators manage their own sites (SPEC §U: they see only their sites too)."""

    list_display = ("name", "time_zone", "is_active")
    search_fields = ("name",)

    def get_queryset(self, request):
        sites = super().get_queryset(request)
        return sites if request.user.is_superuser else sites.filter(staff=request.user)

    def save_model(self, request, obj, form, change):
        attribute(obj, acting_user=request.user, reason="Changed in admin" if change else "Added")
        super().save_model(request, obj, form, change)
        if not change:
            # So the new site is visible to its creator; the membership is history, with why.
            attribute(request.user, acting_user=request.user, reason=f"Joined new site {obj}")
            request.user.sites.add(obj)


@admin.register(User)
class StaffAdmin(UserAdmin, ReadOnlyHistoryAdmin):
    """Staff of the administrator's sites. Only superusers grant superuser or raw permissions."""

    list_display = ("username", "first_name", "last_name", "is_active", "is_staff")
    list_filter = ("is_active", "groups", "sites")
    filter_horizontal = ("groups", "user_permissions", "sites")
    fieldsets = (
        *UserAdmin.fieldsets,
        ("Vigil", {"fields": ("sites", "is_service_account")}),
    )

    def get_readonly_fields(self, request, obj=None):
        fields = ["is_service_account", "last_login", "date_joined"]
        if not request.user.is_superuser:
            fields += ["is_superuser", "user_permissions"]
        return fields

    def get_queryset(self, request):
        users = super().get_queryset(request)
        if request.user.is_superuser:
            return users
        return users.filter(sites__in=request.user.site_ids).distinct()

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "sites" and not request.user.is_superuser:
            kwargs["queryset"] = Site.objects.filter(pk__in=request.user.site_ids)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        attribute(obj, acting_user=request.user, reason="Changed in admin" if change else "Added")
        # One history row per save, written in save_related once the memberships are saved too
        # (otherwise the row, then each membership change, would each write one).
        obj.skip_history_when_saving = True
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        # The form offers only the administrator's sites; keep memberships of the others.
        staff = form.instance
        kept = []
        if change and not request.user.is_superuser:
            kept = list(staff.sites.exclude(pk__in=request.user.site_ids))
        super().save_related(request, form, formsets, change)
        if kept:
            staff.sites.add(*kept)
        del staff.skip_history_when_saving
        STAFF_HISTORY.create_historical_record(staff, "~" if change else "+")


@admin.register(Signature)
class SignatureAdmin(admin.ModelAdmin):
    """Signatures are append-only: viewable by superusers for audits, never edited."""

    list_display = ("printed_name", "meaning", "signed_at", "content_type", "object_id")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ("name", "beat_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
