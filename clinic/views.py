"""Home, site switching and the health probe."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from clinic.middleware import SESSION_KEY
from clinic.models import Heartbeat
from clinic.notifications import notification_mark_read, notifications_for

logger = logging.getLogger(__name__)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "clinic/home.html")


@require_GET
def notification_list(request: HttpRequest) -> HttpResponse:
    items = notifications_for(user=request.user)[:100]
    return render(request, "clinic/notifications.html", {"notifications": items})


@require_POST
def notification_read(request: HttpRequest) -> HttpResponse:
    try:
        notification_id = int(request.POST["notification"])
    except (KeyError, ValueError):
        notification_id = None  # mark all read
    notification_mark_read(user=request.user, notification_id=notification_id)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "notifications"
    return redirect(target)


@require_POST
def switch_site(request: HttpRequest) -> HttpResponse:
    try:
        site_id = int(request.POST.get("site", ""))
    except ValueError:
        site_id = None
    if site_id in request.user.site_ids:
        request.session[SESSION_KEY] = site_id
    else:
        messages.error(request, "You are not a member of that site.")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "home"
    return redirect(target)


def _database_state() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        logger.exception("healthz: database unreachable")
        return "down"
    return "ok"


def _broker_state() -> str:
    from clinic.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:  # any failure means "down"; the probe must not raise
        logger.warning("healthz: broker unreachable")
        return "down"
    return "ok"


def _worker_state(database: str) -> dict:
    if database != "ok":
        return {"state": "unknown"}
    beat = Heartbeat.objects.filter(name="worker").first()
    if beat is None:
        return {"state": "no heartbeat yet"}
    age = timezone.now() - beat.beat_at
    state = "ok" if age < timedelta(minutes=3) else "stale"
    return {"state": state, "last_heartbeat_seconds_ago": int(age.total_seconds())}


@never_cache
@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and compose: database and broker state, no patient data."""
    database = _database_state()
    body = {
        "database": database,
        "broker": _broker_state(),
        "worker": _worker_state(database),
        "broker_transport": "redis" if settings.REDIS_URL else "filesystem",
    }
    return JsonResponse(body, status=200 if database == "ok" else 503)
