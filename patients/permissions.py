"""Object access for patients and consent: 404 outside the user's sites, 403 without the right."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from clinic.models import User
from patients.models import ConsentRecord, ConsentTemplate, Patient


def get_patient_for_user(*, user: User, patient_id: int) -> Patient:
    """Any patient of the user's sites, voided ones included (their chart stays readable)."""
    if not user.has_perm("patients.view_patient"):
        raise PermissionDenied
    return get_object_or_404(
        Patient.objects.select_related("home_site"),
        pk=patient_id,
        home_site_id__in=user.site_ids,
    )


def get_writable_patient_for_user(
    *, user: User, patient_id: int, permission: str = "patients.change_patient"
) -> Patient:
    patient = get_patient_for_user(user=user, patient_id=patient_id)
    if not user.has_perm(permission):
        raise PermissionDenied
    return patient


def get_consent_for_user(*, user: User, consent_id: int) -> ConsentRecord:
    if not user.has_perm("patients.view_consentrecord"):
        raise PermissionDenied
    return get_object_or_404(
        ConsentRecord.objects.select_related("patient__home_site", "template"),
        pk=consent_id,
        patient__home_site_id__in=user.site_ids,
    )


def get_writable_consent_for_user(*, user: User, consent_id: int, permission: str) -> ConsentRecord:
    consent = get_consent_for_user(user=user, consent_id=consent_id)
    if not user.has_perm(permission):
        raise PermissionDenied
    return consent


def get_template_for_user(*, user: User, template_id: int, permission: str) -> ConsentTemplate:
    """Consent templates are chain-wide documents; only the permission matters."""
    if not user.has_perm(permission):
        raise PermissionDenied
    return get_object_or_404(ConsentTemplate, pk=template_id)
