"""Navigation shown to each role: only what the user may do (SPEC §U)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from django.http import HttpRequest
from django.urls import reverse

from clinic.models import Role, Site
from clinic.notifications import unread_count
from followups.selectors import worklist_counts
from protocols.selectors import signoff_queue_count


@dataclass(frozen=True)
class NavItem:
    label: str
    url: str
    icon: str
    url_prefix: str
    badge: int | None = None
    active: bool = False


def _nav_items(user) -> list[NavItem]:
    items = []
    if user.has_perm("patients.view_patient"):
        url = reverse("patients:list")
        items.append(NavItem("Patients", url, "people", url))
    if user.has_perm("monitoring.view_treatmentsession") and not user.has_role(Role.GP):
        url = reverse("monitoring:floor")
        items.append(NavItem("Floor", url, "display", url))
    if user.has_perm("followups.complete_followup"):
        url = reverse("followups:worklist")
        items.append(NavItem("Worklist", url, "list-check", url, badge=worklist_counts(user=user)))
    if user.has_perm("protocols.sign_assessment"):
        url = reverse("protocols:signoff_queue")
        items.append(NavItem("Sign-off", url, "pen", url, badge=signoff_queue_count(user=user)))
    if user.has_perm("protocols.view_protocolversion"):
        url = reverse("protocols:list")
        # Assessments and the sign-off queue live under /protocols/ too: not this section.
        items.append(NavItem("Protocols", url, "journal-medical", url + "versions/"))
    if user.has_perm("patients.view_consenttemplate"):
        url = reverse("patients:template_list")
        items.append(NavItem("Consents", url, "file-earmark-text", url))
    if user.has_perm("monitoring.view_druglot"):
        url = reverse("monitoring:register")
        items.append(NavItem("Drugs", url, "capsule", url))
    if user.has_perm("audit.view_compliance"):
        url = reverse("compliance:dashboard")
        items.append(NavItem("Compliance", url, "clipboard-check", url))
    if user.has_perm("audit.view_auditevent"):
        url = reverse("audit:events")
        items.append(NavItem("Audit", url, "shield-check", url))
    if user.is_staff:
        url = reverse("admin:index")
        items.append(NavItem("Admin", url, "gear", url))
    return items


def navigation(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    site_ids = user.site_ids
    items = _nav_items(user)
    # The section is the longest prefix of the path (sign-off lives under /protocols/ too).
    matching = [i for i in items if request.path == i.url or request.path.startswith(i.url_prefix)]
    if matching:
        best = max(matching, key=lambda i: len(i.url_prefix))
        items = [replace(i, active=i is best) for i in items]
    return {
        "nav_items": items,
        "current_site": getattr(request, "site", None),
        # Only users of several sites get a switcher; one query, bounded by their memberships.
        "switchable_sites": list(Site.objects.filter(pk__in=site_ids)) if len(site_ids) > 1 else [],
        "user_roles": sorted(user.role_names),
        "unread_notifications": unread_count(user=user),
    }
