"""Audit writes: the access log (SPEC §C3) and verification runs (§C4)."""

from __future__ import annotations

import logging

from django.db import models, transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from audit.models import AccessLog, Finding, VerificationRun
from audit.scope import scope_of
from audit.verify import Progress, Report, verify_all
from clinic.models import Notification, Role, User
from clinic.notifications import notify

logger = logging.getLogger(__name__)

# A run stores at most this many findings; the summary keeps the count and the first break.
MAX_FINDINGS = 5000


def _client_address(request: HttpRequest) -> str | None:
    # REMOTE_ADDR is what the server saw; behind the compose proxy-less gunicorn it is the
    # client. X-Forwarded-For is not trusted: any client can set it.
    return request.META.get("REMOTE_ADDR") or None


def access_log(
    *,
    request: HttpRequest,
    what: str,
    record: models.Model | None = None,
    patient_id: int | None = None,
    action: str = AccessLog.Action.VIEW,
    user: User | None = None,
    site_id: int | None = None,
) -> AccessLog:
    """Record that request.user saw `what` (a page or export of `record`, or about `site_id`).
    Names, never values."""
    site_id = site_id or getattr(getattr(request, "site", None), "pk", None)
    if record is not None:
        record_site, record_patient = scope_of(record)
        site_id = record_site or site_id
        patient_id = patient_id or record_patient
    return AccessLog.objects.create(
        at=timezone.now(),
        user=user or request.user,
        action=action,
        what=what[:120],
        object_type=record._meta.label_lower if record is not None else "",
        object_id=str(record.pk) if record is not None else "",
        site_id=site_id,
        patient_id=patient_id,
        path=request.path[:300],
        ip_address=_client_address(request),
    )


def export_log(*, request: HttpRequest, what: str, **kwargs) -> AccessLog:
    return access_log(request=request, what=what, action=AccessLog.Action.EXPORT, **kwargs)


def verification_record(*, triggered_by: str, progress: Progress | None = None):
    """Verify every chain and signature, keep the run and its findings as evidence, and tell
    the administrators when anything is broken."""
    started_at = timezone.now()
    report = verify_all(progress=progress)
    with transaction.atomic():
        run = VerificationRun.objects.create(
            started_at=started_at,
            finished_at=timezone.now(),
            ok=report.ok,
            chains=report.chains,
            links=report.links,
            signatures=report.signatures,
            problems=len(report.problems),
            first_break=str(report.first_break) if report.first_break else "",
            triggered_by=triggered_by[:40],
        )
        Finding.objects.bulk_create(
            Finding(
                run=run,
                kind=p.kind,
                chain_key=p.chain_key,
                seq=p.seq,
                source=p.source,
                source_id=p.source_id,
                site_id=p.site_id,
                occurred_at=p.occurred_at,
                detail=p.detail,
            )
            for p in report.problems[:MAX_FINDINGS]
        )
        if not report.ok:
            _alert_administrators(run, report)
    return run, report


def _alert_administrators(run: VerificationRun, report: Report) -> None:
    # Logs carry no patient data: the count and the chain position only.
    logger.error("audit verification %s failed: %d problems", run.pk, len(report.problems))
    url = reverse("audit:verification", args=[run.pk])
    for admin in User.objects.filter(
        groups__name=Role.ADMINISTRATOR, is_active=True, is_service_account=False
    ).distinct():
        notify(
            recipient=admin,
            kind=Notification.Kind.AUDIT_BROKEN,
            title=f"Audit trail verification found {len(report.problems)} problem(s)",
            url=url,
        )


def _on_sign_in(sender, request, user, **kwargs) -> None:
    # Django's test client signs in with a bare request: the user comes from the signal.
    if request is not None:
        access_log(
            request=request,
            what="Signed in",
            action=AccessLog.Action.SIGN_IN,
            user=user,
            record=user,  # shown to the administrators of the staff member's sites
        )
