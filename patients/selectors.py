"""Reads that encode rules: site scoping, consent status (SPEC §P4, §U)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Max, Q, QuerySet, TextChoices
from django.utils import timezone

from clinic.models import User
from patients.models import ConsentKind, ConsentRecord, ConsentTemplate, Patient


class ConsentStatus(TextChoices):
    VALID = "valid", "Valid"
    EXPIRED = "expired", "Expired"
    WITHDRAWN = "withdrawn", "Withdrawn"
    SUPERSEDED = "superseded", "Superseded — re-consent needed"
    NOT_SIGNED = "not-signed", "Not signed"


def patient_list_for_user(
    *, user: User, query: str | None = None, site_id: int | None = None
) -> QuerySet[Patient]:
    """Active patients of the user's sites, optionally one site, optionally matching a search."""
    patients = Patient.objects.active().filter(home_site_id__in=user.site_ids)
    if site_id is not None:
        patients = patients.filter(home_site_id=site_id)
    # PostgreSQL text cannot hold NUL; nobody's name contains one.
    query = (query or "").replace("\x00", "").strip()
    if query:
        by_name = Q()
        for token in query.split()[:4]:
            by_name &= Q(family_name__istartswith=token) | Q(given_name__istartswith=token)
        patients = patients.filter(by_name | Q(mrn__iexact=query))
    return patients.select_related("home_site")


def superseding_versions(*, at: datetime | None = None) -> dict[str, int]:
    """Per consent kind, the newest version published by `at` that requires re-consent."""
    at = at or timezone.now()
    rows = (
        ConsentTemplate.objects.published()
        .filter(requires_reconsent=True, published_at__lte=at)
        .values("kind")
        .annotate(version=Max("version"))
    )
    return {row["kind"]: row["version"] for row in rows}


def consent_status(
    *,
    consent: ConsentRecord,
    at: datetime | None = None,
    required_version: int | None = None,
    superseding: dict[str, int] | None = None,
) -> ConsentStatus:
    """The one rule for a consent's status at a moment (SPEC §P4); later gates call it.

    `required_version` is the minimum version a protocol requires; `superseding` may be passed
    in (from `superseding_versions`) to avoid a query per consent.
    """
    at = at or timezone.now()
    if consent.signed_at > at:
        return ConsentStatus.NOT_SIGNED
    if consent.withdrawn_at is not None and consent.withdrawn_at <= at:
        return ConsentStatus.WITHDRAWN
    if superseding is None:
        superseding = superseding_versions(at=at)
    minimum = max(required_version or 0, superseding.get(consent.template.kind, 0))
    if consent.template.version < minimum:
        return ConsentStatus.SUPERSEDED
    # valid_until is the last valid day on the patient's home-site calendar.
    local_day = at.astimezone(consent.patient.home_site.tzinfo).date()
    if local_day > consent.valid_until:
        return ConsentStatus.EXPIRED
    return ConsentStatus.VALID


@dataclass(frozen=True)
class KindStatus:
    kind: ConsentKind
    status: ConsentStatus
    consent: ConsentRecord | None

    @property
    def is_valid(self) -> bool:
        return self.status == ConsentStatus.VALID


def patient_consent_summary(*, patient: Patient, at: datetime | None = None) -> list[KindStatus]:
    """Status per consent kind, judged on the patient's most recent consent of that kind."""
    at = at or timezone.now()
    superseding = superseding_versions(at=at)
    latest: dict[str, ConsentRecord] = {}
    for consent in consent_list_for_patient(patient=patient).filter(signed_at__lte=at):
        latest.setdefault(consent.template.kind, consent)
    summary = []
    for kind in ConsentKind:
        consent = latest.get(kind.value)
        status = (
            consent_status(consent=consent, at=at, superseding=superseding)
            if consent
            else ConsentStatus.NOT_SIGNED
        )
        summary.append(KindStatus(kind=kind, status=status, consent=consent))
    return summary


def consent_list_for_patient(*, patient: Patient) -> QuerySet[ConsentRecord]:
    return (
        ConsentRecord.objects.filter(patient=patient)
        .select_related("template", "witness", "prescriber", "withdrawn_by", "patient__home_site")
        .order_by("-signed_at", "-id")
    )


def publishable_templates() -> QuerySet[ConsentTemplate]:
    """Templates a consent may be recorded against: the published ones."""
    return ConsentTemplate.objects.published().order_by("kind", "-version")
