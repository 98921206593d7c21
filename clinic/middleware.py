"""The current site: chosen by the user among their sites; its time zone is used for display."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from clinic.models import RecordLocked, Site

SESSION_KEY = "vigil_site_id"


class RecordLockedMiddleware:
    """Last line behind the services: a change that reached a locked record answers 409 with
    a clear page, never a server error (SPEC §N5)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception):
        if isinstance(exception, RecordLocked):
            return render(request, "clinic/locked.html", {"message": str(exception)}, status=409)
        return None


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
