"""Step 1 of the guideline: protocol versions, treatment courses, pre-treatment assessments."""

from __future__ import annotations

from functools import cached_property

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from clinic.models import (
    LockableModel,
    NeverDeleted,
    RecordLocked,
    TrackedQuerySet,
    without_unset_additions,
)
from patients.models import Patient
from protocols.rules import ProtocolRules, parse_rules


class Protocol(NeverDeleted):
    slug = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=200)
    history = HistoricalRecords()
    objects = TrackedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ProtocolVersionQuerySet(TrackedQuerySet):
    def published(self) -> ProtocolVersionQuerySet:
        return self.filter(published_at__isnull=False)

    def update(self, **kwargs):
        if self.filter(published_at__isnull=False).exists():
            raise RecordLocked("A published protocol version never changes.")
        return super().update(**kwargs)

    def delete(self):
        raise RecordLocked("Protocol versions are never deleted.")


class ProtocolVersion(NeverDeleted):
    """The rules in force for courses started under it (SPEC §G1). Published ones never change."""

    protocol = models.ForeignKey(Protocol, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    rules = models.JSONField()
    change_summary = models.TextField(max_length=2000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    history = HistoricalRecords()
    objects = ProtocolVersionQuerySet.as_manager()

    class Meta:
        ordering = ["protocol", "-version"]
        permissions = [("publish_protocolversion", "Can publish a protocol version")]
        constraints = [
            models.UniqueConstraint(fields=["protocol", "version"], name="protocol_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.protocol.name} v{self.version}"

    def save(self, *args, **kwargs):
        # Courses are pinned to a published version: it never changes (SPEC §G1).
        if (
            not self._state.adding
            and ProtocolVersion.objects.filter(pk=self.pk, published_at__isnull=False).exists()
        ):
            raise RecordLocked("A published protocol version never changes.")
        super().save(*args, **kwargs)

    def clean(self) -> None:
        try:
            parse_rules(self.rules)
        except ValidationError as error:
            raise ValidationError({"rules": error.messages}) from error

    @cached_property
    def parsed(self) -> ProtocolRules:
        return parse_rules(self.rules)

    @property
    def is_published(self) -> bool:
        return self.published_at is not None


class TreatmentCourse(NeverDeleted):
    """A course of treatment, pinned to the protocol version in force when it started (§G2)."""

    class Status(models.TextChoices):
        ASSESSMENT_PENDING = "assessment-pending", "Assessment pending"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"
        STOPPED = "stopped", "Stopped"

    class Indication(models.TextChoices):
        TRD = "trd", "Treatment-resistant depression"
        MDD_SI = "mdd-si", "Major depressive disorder with acute suicidal ideation or behaviour"
        GAD = "gad", "Generalized anxiety disorder"
        PTSD = "ptsd", "Post-traumatic stress disorder"
        OTHER = "other", "Other (see notes)"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="courses")
    protocol_version = models.ForeignKey(
        ProtocolVersion, on_delete=models.PROTECT, related_name="courses"
    )
    indication = models.CharField(max_length=20, choices=Indication.choices)
    indication_notes = models.TextField(max_length=2000, blank=True)
    responsible_psychiatrist = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    planned_sessions = models.PositiveSmallIntegerField()
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.ASSESSMENT_PENDING
    )
    status_reason = models.TextField(max_length=1000, blank=True)
    # SPEC §A4: a course below the protocol's minimum age (esketamine: 18, label) needs the
    # prescriber's reason; empty when no override was needed.
    age_override_reason = models.TextField(max_length=1000, blank=True)
    age_override_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    history = HistoricalRecords()
    objects = TrackedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(planned_sessions__gte=1, planned_sessions__lte=100),
                name="course_planned_sessions_range",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=["paused", "stopped"]) | ~Q(status_reason=""),
                name="course_pause_stop_has_reason",
            ),
        ]
        indexes = [
            # Courses on the patient chart, newest first.
            models.Index(fields=["patient", "-created_at"], name="course_patient"),
        ]

    def __str__(self) -> str:
        return f"{self.protocol_version.protocol.name} course ({self.get_status_display()})"


class Assessment(LockableModel):
    """The pre-treatment assessment of SPEC §A, signed by a psychiatrist (§A3, §S)."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SUBMITTED = "submitted", "Submitted for sign-off"
        APPROVED = "approved", "Signed: approved"
        NOT_APPROVED = "not-approved", "Signed: not approved"

    class SubstanceUse(models.TextChoices):
        NEVER = "never", "Never"
        PAST = "past", "In the past"
        CURRENT = "current", "Current"

    class Pregnancy(models.TextChoices):
        NOT_APPLICABLE = "not-applicable", "Not applicable"
        NOT_PREGNANT = "not-pregnant", "Not pregnant, not breastfeeding"
        PREGNANT = "pregnant", "Pregnant"
        BREASTFEEDING = "breastfeeding", "Breastfeeding"
        UNKNOWN = "unknown", "Unknown — test pending"

    course = models.ForeignKey(
        TreatmentCourse, on_delete=models.PROTECT, related_name="assessments"
    )
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="assessments")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)

    # A1: history
    diagnosis = models.CharField(max_length=300, blank=True)
    psychiatric_history = models.TextField(max_length=5000, blank=True)
    psychosis_personal = models.BooleanField("personal history of psychosis", null=True)
    mania_personal = models.BooleanField("personal history of mania", null=True)
    psychosis_mania_family = models.BooleanField(
        "psychosis or mania in a first-degree relative", null=True
    )
    substance_use = models.TextField("substance use", max_length=3000, blank=True)
    ketamine_pcp_use = models.CharField(
        "ketamine / PCP use", max_length=10, choices=SubstanceUse.choices, blank=True
    )
    alcohol_use = models.CharField(max_length=300, blank=True)
    medical_history = models.TextField(max_length=5000, blank=True)
    current_medications = models.TextField(max_length=3000, blank=True)
    allergies = models.CharField(max_length=500, blank=True)
    # A1: concomitant medicines that matter for dosing
    benzodiazepines = models.BooleanField(null=True)
    sedative_hypnotics = models.BooleanField("non-benzodiazepine sedative hypnotics", null=True)
    psychostimulants = models.BooleanField(null=True)
    maois = models.BooleanField("MAOIs", null=True)
    opioids = models.BooleanField(null=True)
    concomitant_notes = models.TextField(max_length=2000, blank=True)
    pregnancy = models.CharField(max_length=20, choices=Pregnancy.choices, blank=True)
    # A1: baseline vitals and weight (plausibility limits from the protocol version)
    sbp = models.PositiveSmallIntegerField("systolic BP (mmHg)", null=True, blank=True)
    dbp = models.PositiveSmallIntegerField("diastolic BP (mmHg)", null=True, blank=True)
    hr = models.PositiveSmallIntegerField("heart rate (/min)", null=True, blank=True)
    rr = models.PositiveSmallIntegerField("respiratory rate (/min)", null=True, blank=True)
    spo2 = models.PositiveSmallIntegerField("SpO2 (%)", null=True, blank=True)
    weight_kg = models.DecimalField(
        "weight (kg)", max_digits=5, decimal_places=1, null=True, blank=True
    )
    # Instruments: item answers stored with the derived results (SPEC §I)
    phq9_items = models.JSONField(null=True, blank=True)
    phq9_total = models.PositiveSmallIntegerField(null=True, blank=True)
    phq9_band = models.CharField(max_length=30, blank=True)
    gad7_items = models.JSONField(null=True, blank=True)
    gad7_total = models.PositiveSmallIntegerField(null=True, blank=True)
    gad7_band = models.CharField(max_length=30, blank=True)
    cssrs_answers = models.JSONField(null=True, blank=True)
    cssrs_risk = models.CharField(max_length=10, blank=True)
    # When the screen was administered (SPEC §G3: the most recently *administered* C-SSRS
    # counts), not when the record was created.
    cssrs_administered_at = models.DateTimeField(null=True, blank=True)
    # GAD-7 >= 10 warrants further evaluation (SPEC §I, §F2): stored when scored.
    gad7_evaluation_flag = models.BooleanField(default=False)
    moca_total = models.PositiveSmallIntegerField("MoCA total", null=True, blank=True)
    madrs_total = models.PositiveSmallIntegerField("MADRS total", null=True, blank=True)
    suicide_risk_flag = models.BooleanField(default=False)
    # A2: {code: {"present": bool, "note": str}} for every contraindication of the version
    contraindications = models.JSONField(default=dict, blank=True)
    override_reason = models.TextField(max_length=2000, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    submitted_at = models.DateTimeField(null=True, blank=True)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    signed_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("sign_assessment", "Can sign (approve or decline) an assessment")]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["draft", "submitted"], locked_at__isnull=True)
                | Q(status__in=["approved", "not-approved"], locked_at__isnull=False),
                name="assessment_signed_iff_locked",
            ),
            models.CheckConstraint(
                condition=Q(moca_total__isnull=True) | Q(moca_total__lte=30),
                name="assessment_moca_range",
            ),
            models.CheckConstraint(
                condition=Q(madrs_total__isnull=True) | Q(madrs_total__lte=60),
                name="assessment_madrs_range",
            ),
        ]
        indexes = [
            # The psychiatrist's sign-off queue: submitted, oldest first.
            models.Index(fields=["status", "submitted_at"], name="assessment_queue"),
            # Assessment history on the chart and the start gate's latest-signed lookup.
            models.Index(fields=["patient", "-created_at"], name="assessment_patient"),
        ]

    def __str__(self) -> str:
        return f"Assessment ({self.get_status_display()})"

    @property
    def is_draft(self) -> bool:
        return self.status == self.Status.DRAFT

    def signed_content(self) -> dict:
        """Everything the psychiatrist signs: every clinical field, not workflow state."""
        excluded = {"id", "status", "locked_at", "signed_at", "created_at"}
        return without_unset_additions(
            self._meta.db_table,
            {
                f.attname: getattr(self, f.attname)
                for f in self._meta.concrete_fields
                if f.attname not in excluded
            },
        )
