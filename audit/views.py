"""The audit viewer (SPEC §C6) and verification runs (§C4). Administrators only, read-only."""

from __future__ import annotations

from datetime import UTC
from urllib.parse import urlencode

from django.contrib.auth.decorators import permission_required
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from audit.forms import EventFilterForm
from audit.models import AuditEvent, VerificationRun
from audit.selectors import (
    EventFilter,
    describe,
    events_for_user,
    filter_events,
    record_events,
    record_for_user,
    staff_member_for_user,
)
from audit.services import access_log, export_log
from clinic.exports import csv_response
from clinic.pagination import keyset_page
from clinic.signatures import signatures_for
from patients.permissions import get_patient_for_user

PAGE_SIZE = 50
NEWEST_FIRST = ("-occurred_at", "-id")
OLDEST_FIRST = ("occurred_at", "id")
VIEW = "audit.view_auditevent"
EXPORT_BATCH = 1000


def _page(request: HttpRequest, events, fields=NEWEST_FIRST):
    page = keyset_page(events, fields=fields, cursor=request.GET.get("after"), size=PAGE_SIZE)
    return page, describe(page.items)


def _query_without_cursor(request: HttpRequest) -> str:
    return urlencode([(k, v) for k, v in request.GET.items() if k != "after"])


@require_GET
@permission_required(VIEW, raise_exception=True)
def event_list(request: HttpRequest) -> HttpResponse:
    form = EventFilterForm(request.GET or None, user=request.user)
    events = events_for_user(user=request.user)
    if form.is_bound and not form.is_valid():
        events = events.none()
    elif form.is_bound:
        events = filter_events(events, form.event_filter(), timezone.get_current_timezone())
    page, rows = _page(request, events)
    context = {"form": form, "page": page, "rows": rows, "query": _query_without_cursor(request)}
    return render(request, "audit/events.html", context)


@require_GET
@permission_required(VIEW, raise_exception=True)
def event_export(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    form = EventFilterForm(request.GET or None, user=request.user)
    if form.is_bound and not form.is_valid():
        page, rows = _page(request, AuditEvent.objects.none())
        context = {"form": form, "page": page, "rows": rows, "query": ""}
        return render(request, "audit/events.html", context, status=400)
    event_filter = form.event_filter() if form.is_bound else EventFilter()
    events = filter_events(
        events_for_user(user=request.user), event_filter, timezone.get_current_timezone()
    )
    export_log(request=request, what="Audit trail export")
    return _csv(events, f"vigil-audit-{timezone.localdate():%Y%m%d}.csv")


def _csv(events, filename: str) -> StreamingHttpResponse:
    return csv_response(
        filename=filename,
        header=(
            "occurred at (UTC)",
            "action",
            "staff member",
            "site",
            "record",
            "record id",
            "patient id",
            "reason or page",
            "changes (field: old → new)",
            "chain",
            "link",
            "link hash",
        ),
        rows=_export_rows(events),
    )


def _export_rows(events):
    # The viewer's own keyset pages, a batch at a time: bounded memory, no OFFSET.
    cursor = None
    while True:
        page = keyset_page(events, fields=NEWEST_FIRST, cursor=cursor, size=EXPORT_BATCH)
        for row in describe(page.items):
            e = row.event
            yield (
                e.occurred_at.astimezone(UTC).isoformat(),
                e.get_action_display(),
                e.user.username if e.user else "",
                e.site.name if e.site else "",
                e.object_type,
                e.object_id,
                e.patient_id or "",
                e.reason,
                "; ".join(f"{c.field}: {c.old} → {c.new}" for c in row.changes),
                e.chain.key,
                e.seq,
                e.hash,
            )
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


@require_GET
@permission_required(VIEW, raise_exception=True)
def record_trail(request: HttpRequest, object_type: str, object_id: str) -> HttpResponse:
    record = record_for_user(user=request.user, object_type=object_type, object_id=object_id)
    access_log(request=request, what="Audit trail of a record", record=record)
    page, rows = _page(request, record_events(user=request.user, record=record), OLDEST_FIRST)
    signatures = signatures_for(record) if hasattr(record, "signed_content") else []
    context = {
        "record": record,
        "object_type": record._meta.label_lower,
        "record_type": record._meta.verbose_name,
        "page": page,
        "rows": rows,
        "signatures": signatures,
        "query": "",
    }
    return render(request, "audit/record.html", context)


@require_GET
@permission_required(VIEW, raise_exception=True)
def record_export(request: HttpRequest, object_type: str, object_id: str) -> StreamingHttpResponse:
    record = record_for_user(user=request.user, object_type=object_type, object_id=object_id)
    export_log(request=request, what="Audit trail export of a record", record=record)
    label = record._meta.model_name
    return _csv(
        record_events(user=request.user, record=record),
        f"vigil-audit-{label}-{record.pk}-{timezone.localdate():%Y%m%d}.csv",
    )


@require_GET
@permission_required(VIEW, raise_exception=True)
def patient_timeline(request: HttpRequest, pk: int) -> HttpResponse:
    patient = get_patient_for_user(user=request.user, patient_id=pk)
    access_log(request=request, what="Audit timeline of a patient", record=patient)
    events = events_for_user(user=request.user).filter(patient_id=patient.pk)
    page, rows = _page(request, events)
    context = {"patient": patient, "page": page, "rows": rows, "query": ""}
    return render(request, "audit/patient.html", context)


@require_GET
@permission_required(VIEW, raise_exception=True)
def user_activity(request: HttpRequest, pk: int) -> HttpResponse:
    member = staff_member_for_user(user=request.user, pk=pk)
    events = events_for_user(user=request.user).filter(user_id=member.pk)
    page, rows = _page(request, events)
    context = {"member": member, "page": page, "rows": rows, "query": ""}
    return render(request, "audit/user.html", context)


@require_GET
@permission_required("audit.view_verificationrun", raise_exception=True)
def verification_list(request: HttpRequest) -> HttpResponse:
    runs = VerificationRun.objects.order_by("-started_at", "-id")[:60]
    return render(request, "audit/verifications.html", {"runs": runs})


@require_GET
@permission_required("audit.view_verificationrun", raise_exception=True)
def verification_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(VerificationRun, pk=pk)
    # Clinic-wide findings (no site) are shown to every administrator.
    findings = run.findings.filter(
        Q(site__isnull=True) | Q(site_id__in=request.user.site_ids)
    ).order_by("id")[:500]
    return render(request, "audit/verification.html", {"run": run, "findings": findings})
