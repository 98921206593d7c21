"""The current site: chosen by the user among their sites; its time zone is used for display."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from clinic.models import Site

SESSION_KEY = "vigil_site_id"


class CurrentSiteMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.site = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.site_ids:
            wanted = request.session.get(SESSION_KEY)
            site_id = wanted if wanted in user.site_ids else min(user.site_ids)
            request.site = Site.objects.get(pk=site_id)
            timezone.activate(request.site.tzinfo)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
