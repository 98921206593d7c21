"""Patients and consent (SPEC §P). Nothing here is ever hard-deleted."""

from __future__ import annotations

import uuid
from datetime import date

from django.conf import settings
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from clinic.models import NeverDeleted, RecordLocked, Site, TrackedQuerySet


class PatientQuerySet(TrackedQuerySet):
    def active(self) -> PatientQuerySet:
        return self.filter(voided_at__isnull=True)


class Patient(NeverDeleted):
    class Sex(models.TextChoices):
        FEMALE = "female", "Female"
        MALE = "male", "Male"
        OTHER = "other", "Other"
        UNKNOWN = "unknown", "Not stated"

    home_site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="patients")
    mrn = models.CharField("medical record number", max_length=32)
    given_name = models.CharField(max_length=100)
    family_name = models.CharField(max_length=100)
    date_of_birth = models.DateField()
    sex = models.CharField(max_length=10, choices=Sex.choices)
    phone = models.CharField(max_length=40, blank=True)
    email = models.EmailField(blank=True)
    address = models.TextField(max_length=500, blank=True)
    emergency_contact_name = models.CharField(max_length=120, blank=True)
    emergency_contact_phone = models.CharField(max_length=40, blank=True)
    usual_escort = models.CharField(
        "usual escort / transport",
        max_length=200,
        blank=True,
        help_text="Who usually takes the patient home, and how.",
    )
    gp_name = models.CharField("GP name", max_length=120, blank=True)
    gp_contact = models.CharField("GP contact", max_length=200, blank=True)
    weight_kg = models.DecimalField(
        "current weight (kg)", max_digits=5, decimal_places=1, null=True, blank=True
    )
    weight_measured_on = models.DateField("weight measured on", null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    voided_at = models.DateTimeField(null=True, blank=True)
    voided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    void_reason = models.TextField(blank=True)

    history = HistoricalRecords()
    objects = PatientQuerySet.as_manager()

    class Meta:
        ordering = ["family_name", "given_name", "id"]
        permissions = [("void_patient", "Can void a patient registered in error")]
        constraints = [
            # A voided registration (made in error) frees its record number for the right patient.
            models.UniqueConstraint(
                fields=["home_site", "mrn"],
                condition=Q(voided_at__isnull=True),
                name="patient_mrn_unique_per_site",
            ),
            models.CheckConstraint(
                condition=(
                    Q(voided_at__isnull=True, voided_by__isnull=True, void_reason="")
                    | (Q(voided_at__isnull=False, voided_by__isnull=False) & ~Q(void_reason=""))
                ),
                name="patient_void_fields_together",
            ),
            models.CheckConstraint(
                condition=Q(weight_kg__isnull=True) | Q(weight_kg__gte=1, weight_kg__lte=400),
                name="patient_weight_plausible",
            ),
        ]
        indexes = [
            # The patient list: one site's patients in name order, keyset-paginated.
            models.Index(
                fields=["home_site", "family_name", "given_name", "id"], name="patient_site_name"
            ),
            # Search by record number.
            models.Index(fields=["mrn"], name="patient_mrn"),
        ]

    def __str__(self) -> str:
        # Identifiers stay out of logs: only views render this.
        return f"{self.family_name}, {self.given_name}"

    @property
    def full_name(self) -> str:
        return f"{self.given_name} {self.family_name}"

    @property
    def is_voided(self) -> bool:
        return self.voided_at is not None

    def age_on(self, day: date) -> int:
        born = self.date_of_birth
        return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


class ConsentKind(models.TextChoices):
    KETAMINE_TREATMENT = "ketamine-treatment", "Ketamine treatment (off-label)"
    ESKETAMINE_REMS = "esketamine-rems-enrollment", "Esketamine REMS enrollment"
    DATA_SHARING = "data-sharing", "Data sharing"


class ConsentTemplateQuerySet(TrackedQuerySet):
    def published(self) -> ConsentTemplateQuerySet:
        return self.filter(published_at__isnull=False)


class ConsentTemplate(NeverDeleted):
    """One version of a consent document. Published versions never change."""

    kind = models.CharField(max_length=40, choices=ConsentKind.choices)
    version = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    text = models.TextField(max_length=50_000)
    validity_days = models.PositiveIntegerField(
        default=365, help_text="How long a consent to this version stays valid."
    )
    requires_reconsent = models.BooleanField(
        default=False,
        help_text="When published, consents to earlier versions of this kind become superseded.",
    )
    text_sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    history = HistoricalRecords()
    objects = ConsentTemplateQuerySet.as_manager()

    class Meta:
        ordering = ["kind", "-version"]
        permissions = [("publish_consenttemplate", "Can publish a consent template version")]
        constraints = [
            models.UniqueConstraint(fields=["kind", "version"], name="consent_template_version"),
            models.CheckConstraint(
                condition=Q(validity_days__gte=1, validity_days__lte=3650),
                name="consent_template_validity_range",
            ),
            models.CheckConstraint(
                condition=Q(published_at__isnull=True) | ~Q(text_sha256=""),
                name="consent_template_published_has_hash",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} v{self.version}"

    def save(self, *args, **kwargs):
        # Consents are bound to a published version's text: it never changes (SPEC §P2).
        if (
            not self._state.adding
            and ConsentTemplate.objects.filter(pk=self.pk, published_at__isnull=False).exists()
        ):
            raise RecordLocked("A published consent template never changes.")
        super().save(*args, **kwargs)

    @property
    def is_published(self) -> bool:
        return self.published_at is not None


def consent_scan_path(instance: ConsentRecord, filename: str) -> str:
    # The uploaded name may carry patient identifiers: never reuse it.
    extension = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}.get(
        instance.scan_content_type, "bin"
    )
    return f"consent-scans/{uuid.uuid4().hex}.{extension}"


class ConsentRecord(NeverDeleted):
    """A patient's consent to one exact template version (SPEC §P3)."""

    class SignatureMethod(models.TextChoices):
        WET_SCANNED = "wet-scanned", "Wet signature on paper, scanned"
        TABLET = "tablet", "Signed on tablet"
        VERBAL = "verbal-witnessed", "Verbal, with witness"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="consents")
    template = models.ForeignKey(ConsentTemplate, on_delete=models.PROTECT, related_name="+")
    template_sha256 = models.CharField(
        max_length=64, help_text="SHA-256 of the template text the patient consented to."
    )
    signature_method = models.CharField(max_length=20, choices=SignatureMethod.choices)
    signed_at = models.DateTimeField()
    witness = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    prescriber = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The prescriber who co-signed (required for esketamine REMS enrollment).",
    )
    scan = models.FileField(upload_to=consent_scan_path, blank=True)
    scan_content_type = models.CharField(max_length=40, blank=True)
    valid_until = models.DateField(help_text="Last day the consent is valid (site's calendar).")
    created_at = models.DateTimeField(auto_now_add=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    withdrawal_reason = models.TextField(blank=True)

    history = HistoricalRecords()
    objects = TrackedQuerySet.as_manager()

    class Meta:
        ordering = ["-signed_at", "-id"]
        permissions = [("withdraw_consentrecord", "Can record a consent withdrawal")]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(withdrawn_at__isnull=True, withdrawn_by__isnull=True, withdrawal_reason="")
                    | (
                        Q(withdrawn_at__isnull=False, withdrawn_by__isnull=False)
                        & ~Q(withdrawal_reason="")
                    )
                ),
                name="consent_withdrawal_fields_together",
            ),
            models.CheckConstraint(
                condition=Q(scan="") | ~Q(scan_content_type=""),
                name="consent_scan_has_content_type",
            ),
        ]
        indexes = [
            # Consent status per kind on the chart and at the start gate: latest record first.
            models.Index(fields=["patient", "-signed_at"], name="consent_patient_latest"),
        ]

    def __str__(self) -> str:
        return f"{self.template} signed {self.signed_at:%Y-%m-%d}"

    @property
    def kind(self) -> str:
        return self.template.kind
