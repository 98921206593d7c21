"""Writes for patients and consent (SPEC §P). Views, admin and commands call these."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from clinic.models import Role, Site, User
from clinic.services import attribute, sha256_text
from patients.models import ConsentKind, ConsentRecord, ConsentTemplate, Patient
from patients.scans import sniff_scan_content_type

PATIENT_FIELDS = (
    "mrn",
    "given_name",
    "family_name",
    "date_of_birth",
    "sex",
    "phone",
    "email",
    "address",
    "emergency_contact_name",
    "emergency_contact_phone",
    "usual_escort",
    "gp_name",
    "gp_contact",
    "weight_kg",
    "weight_measured_on",
)

PATIENT_VOIDED = "This registration was voided and can no longer be changed."
TEMPLATE_PUBLISHED = "A published consent template never changes; create a new version instead."
TEMPLATE_NOT_PUBLISHED = "Consent can only be recorded against a published template version."
CONSENT_ALREADY_WITHDRAWN = "This consent was already withdrawn."
REMS_NEEDS_PRESCRIBER = "Esketamine REMS enrollment is signed by the patient and the prescriber."
PRESCRIBER_NOT_PSYCHIATRIST = "The co-signing prescriber must be a psychiatrist of the site."
SIGNED_IN_FUTURE = "The signing time cannot be in the future."
VALID_UNTIL_BEFORE_SIGNING = "The consent cannot expire before it was signed."
VALID_UNTIL_BEYOND_VALIDITY = "The document is valid for {days} days: the last valid day is {day}."
# No consent outlives the longest validity a template may have (ten years).
CONSENT_MAX_AGE_DAYS = 3650
SIGNED_TOO_LONG_AGO = "Check the date: a consent signed more than ten years ago is not valid."
MRN_TAKEN = "A patient with this record number is already registered at {site}."


# --- Weight limits (SPEC §P1): protocol data ---------------------------------------------------
#
# The limits live on protocol versions, and protocols sit above patients in the layers: the
# protocols app registers the provider when it loads (protocols.apps), so this module never
# imports it.

WeightLimits = tuple[Decimal, Decimal]
_weight_limits_provider: Callable[[], WeightLimits | None] | None = None
WEIGHT_OUTSIDE_LIMITS = (
    "Enter a weight between {low} and {high} kg (the protocols' weight limits); check the scale "
    "and the unit (kg, not lb)."
)


def register_weight_limits(provider: Callable[[], WeightLimits | None]) -> None:
    global _weight_limits_provider
    _weight_limits_provider = provider


def weight_limits() -> WeightLimits | None:
    """The weight range every protocol in force accepts, or None when none is registered."""
    return _weight_limits_provider() if _weight_limits_provider else None


def weight_error(weight: Any) -> str | None:
    limits = weight_limits()
    if weight is None or limits is None:
        return None
    low, high = limits
    try:
        value = Decimal(str(weight))
    except (InvalidOperation, ValueError):
        return WEIGHT_OUTSIDE_LIMITS.format(low=low, high=high)
    if not value.is_finite() or not low <= value <= high:
        return WEIGHT_OUTSIDE_LIMITS.format(low=low, high=high)
    return None


def _check_weight(fields: dict[str, Any]) -> None:
    if "weight_kg" in fields:
        error = weight_error(fields["weight_kg"])
        if error:
            raise ValidationError({"weight_kg": error})


def patient_register(*, site: Site, acting_user: User, **fields: Any) -> Patient:
    fields = _patient_fields(fields)
    _check_weight(fields)
    if fields.get("mrn"):
        fields["mrn"] = fields["mrn"].strip().upper()  # record numbers compare without case
    patient = Patient(home_site=site, created_by=acting_user, **fields)
    patient.full_clean()
    attribute(patient, acting_user=acting_user, reason="Registered")
    try:
        with transaction.atomic():
            patient.save()
    except IntegrityError as error:
        # Two registrations of one record number at once: the database kept the first.
        raise ValidationError({"mrn": MRN_TAKEN.format(site=site.name)}) from error
    return patient


@transaction.atomic
def patient_update(*, patient: Patient, acting_user: User, **fields: Any) -> Patient:
    patient = Patient.objects.select_for_update().get(pk=patient.pk)
    if patient.is_voided:
        raise ValidationError(PATIENT_VOIDED)
    _check_weight(_patient_fields(fields))
    changed = [
        name for name, value in _patient_fields(fields).items() if getattr(patient, name) != value
    ]
    if not changed:
        return patient
    for name in changed:
        setattr(patient, name, fields[name])
    patient.full_clean()
    attribute(patient, acting_user=acting_user, reason="Edited: " + ", ".join(changed))
    patient.save(update_fields=changed)
    return patient


@transaction.atomic
def patient_void(*, patient: Patient, acting_user: User, reason: str) -> Patient:
    """Hide a registration made in error. The row and its history stay."""
    patient = Patient.objects.select_for_update().get(pk=patient.pk)
    if patient.is_voided:
        raise ValidationError(PATIENT_VOIDED)
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Give the reason for voiding this registration."})
    patient.voided_at = timezone.now()
    patient.voided_by = acting_user
    patient.void_reason = reason
    attribute(patient, acting_user=acting_user, reason=f"Voided: {reason}")
    patient.save(update_fields=["voided_at", "voided_by", "void_reason"])
    return patient


def _patient_fields(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(PATIENT_FIELDS)
    if unknown:
        raise TypeError(f"Unknown patient fields: {sorted(unknown)}")
    return fields


# --- Consent templates ------------------------------------------------------------------------


def consent_template_create(
    *,
    acting_user: User,
    kind: str,
    title: str,
    text: str,
    validity_days: int = 365,
    requires_reconsent: bool = False,
) -> ConsentTemplate:
    """A new draft version of `kind`, numbered after the newest existing version."""
    # Two administrators may draft at once: the unique (kind, version) constraint decides,
    # and the one who loses takes the next number.
    for _attempt in range(5):
        try:
            with transaction.atomic():
                latest = ConsentTemplate.objects.filter(kind=kind).aggregate(v=Max("version"))
                template = ConsentTemplate(
                    kind=kind,
                    version=(latest["v"] or 0) + 1,
                    title=title,
                    text=text,
                    validity_days=validity_days,
                    requires_reconsent=requires_reconsent,
                    created_by=acting_user,
                )
                template.full_clean(validate_constraints=False)
                template.validate_constraints(exclude={"version"})  # the race is settled by the DB
                attribute(template, acting_user=acting_user, reason="Draft created")
                template.save()
                return template
        except IntegrityError:
            continue
    raise ValidationError("Another version is being created right now; try again.")


@transaction.atomic
def consent_template_update(
    *, template: ConsentTemplate, acting_user: User, **fields: Any
) -> ConsentTemplate:
    template = ConsentTemplate.objects.select_for_update().get(pk=template.pk)
    if template.is_published:
        raise ValidationError(TEMPLATE_PUBLISHED)
    allowed = {"title", "text", "validity_days", "requires_reconsent"}
    changed = [k for k, v in fields.items() if k in allowed and getattr(template, k) != v]
    for name in changed:
        setattr(template, name, fields[name])
    if changed:
        template.full_clean()
        attribute(template, acting_user=acting_user, reason="Draft edited: " + ", ".join(changed))
        template.save(update_fields=changed)
    return template


@transaction.atomic
def consent_template_publish(*, template: ConsentTemplate, acting_user: User) -> ConsentTemplate:
    template = ConsentTemplate.objects.select_for_update().get(pk=template.pk)
    if template.is_published:
        raise ValidationError(TEMPLATE_PUBLISHED)
    template.published_at = timezone.now()
    template.published_by = acting_user
    template.text_sha256 = sha256_text(template.text)
    attribute(template, acting_user=acting_user, reason="Published")
    template.save(update_fields=["published_at", "published_by", "text_sha256"])
    return template


# --- Consent records --------------------------------------------------------------------------


@transaction.atomic
def consent_record(
    *,
    patient: Patient,
    template: ConsentTemplate,
    acting_user: User,
    signature_method: str,
    signed_at: datetime | None = None,
    valid_until=None,
    prescriber: User | None = None,
    scan: UploadedFile | None = None,
    witness: User | None = None,
) -> ConsentRecord:
    """Record a patient's consent, witnessed by the acting (logged-in) staff member.

    `witness` is only for commands that import paper consents on a named staff member's behalf.
    """
    patient = Patient.objects.select_for_update().get(pk=patient.pk)
    if patient.is_voided:
        raise ValidationError(PATIENT_VOIDED)
    if not template.is_published:
        raise ValidationError({"template": TEMPLATE_NOT_PUBLISHED})
    now = timezone.now()
    signed_at = signed_at or now
    if signed_at > now + timedelta(minutes=1):
        raise ValidationError({"signed_at": SIGNED_IN_FUTURE})
    if signed_at < now - timedelta(days=CONSENT_MAX_AGE_DAYS):
        raise ValidationError({"signed_at": SIGNED_TOO_LONG_AGO})
    if template.kind == ConsentKind.ESKETAMINE_REMS and prescriber is None:
        raise ValidationError({"prescriber": REMS_NEEDS_PRESCRIBER})
    if prescriber is not None and not (
        prescriber.is_active
        and prescriber.has_role(Role.PSYCHIATRIST)
        and patient.home_site_id in prescriber.site_ids
    ):
        raise ValidationError({"prescriber": PRESCRIBER_NOT_PSYCHIATRIST})
    signed_day = signed_at.astimezone(patient.home_site.tzinfo).date()
    last_day = signed_day + timedelta(days=template.validity_days - 1)
    if valid_until is None:
        valid_until = last_day
    if valid_until < signed_day:
        raise ValidationError({"valid_until": VALID_UNTIL_BEFORE_SIGNING})
    if valid_until > last_day:
        raise ValidationError(
            {
                "valid_until": VALID_UNTIL_BEYOND_VALIDITY.format(
                    days=template.validity_days, day=last_day.isoformat()
                )
            }
        )
    consent = ConsentRecord(
        patient=patient,
        template=template,
        # The template's text at this moment, not its stored hash: the two must agree.
        template_sha256=sha256_text(template.text),
        signature_method=signature_method,
        signed_at=signed_at,
        witness=witness or acting_user,
        prescriber=prescriber,
        valid_until=valid_until,
    )
    if scan is not None:
        consent.scan_content_type = sniff_scan_content_type(scan)
        consent.scan = scan
    consent.full_clean(exclude=["scan"])
    attribute(consent, acting_user=acting_user, reason="Consent recorded")
    consent.save()
    return consent


@transaction.atomic
def consent_withdraw(*, consent: ConsentRecord, acting_user: User, reason: str) -> ConsentRecord:
    """Withdrawal takes effect at once: no new session may start after it (SPEC §P4)."""
    consent = ConsentRecord.objects.select_for_update().select_related("patient").get(pk=consent.pk)
    if consent.patient.is_voided:
        raise ValidationError(PATIENT_VOIDED)
    if consent.withdrawn_at is not None:
        raise ValidationError(CONSENT_ALREADY_WITHDRAWN)
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Give the reason the patient withdrew consent."})
    consent.withdrawn_at = timezone.now()
    consent.withdrawn_by = acting_user
    consent.withdrawal_reason = reason
    attribute(consent, acting_user=acting_user, reason=f"Withdrawn: {reason}")
    consent.save(update_fields=["withdrawn_at", "withdrawn_by", "withdrawal_reason"])
    return consent
