"""Step 2 of the guideline: treatment sessions, doses, vitals, alerts, checks, discharge (§M)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from clinic.models import (
    LockableModel,
    LockableQuerySet,
    NeverDeleted,
    RecordLocked,
    Site,
    TrackedQuerySet,
    without_unset_additions,
)
from patients.models import Patient
from protocols.models import TreatmentCourse


class SessionQuerySet(LockableQuerySet):
    def active(self) -> SessionQuerySet:
        return self.filter(status__in=TreatmentSession.ACTIVE_STATUSES)


class TreatmentSession(LockableModel):
    """One dose (SPEC §M1). Locked with its children once discharged."""

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        CHECKED_IN = "checked-in", "Checked in"
        DOSING = "dosing", "Dosing"
        MONITORING = "monitoring", "Monitoring"
        DISCHARGED = "discharged", "Discharged"
        ABORTED = "aborted", "Aborted"

    ACTIVE_STATUSES = ("checked-in", "dosing", "monitoring")

    class PredoseDecision(models.TextChoices):
        PROCEED = "proceed", "Proceed"
        DEFER = "defer", "Defer"

    course = models.ForeignKey(TreatmentCourse, on_delete=models.PROTECT, related_name="sessions")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="sessions")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="sessions")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SCHEDULED)
    scheduled_at = models.DateTimeField()
    chair = models.CharField("chair or room", max_length=40)
    supervising_clinician = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The anesthesiologist or psychiatrist on duty, who acknowledges alerts.",
    )
    escort_confirmed = models.BooleanField(default=False)
    escort_details = models.CharField(max_length=200, blank=True)
    checked_in_at = models.DateTimeField(null=True, blank=True)
    checked_in_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    predose_decision = models.CharField(max_length=10, choices=PredoseDecision.choices, blank=True)
    predose_decision_reason = models.TextField(max_length=1000, blank=True)
    predose_decision_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    predose_decision_at = models.DateTimeField(null=True, blank=True)
    # SPEC §M5: the decision is bound to the reading it was made on; a later raised pre-dose
    # reading needs a new decision.
    predose_decision_reading = models.ForeignKey(
        "VitalReading", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    dose_started_at = models.DateTimeField(
        null=True, blank=True, help_text="Infusion start (IV) or first device (intranasal)."
    )
    dose_ended_at = models.DateTimeField(
        null=True, blank=True, help_text="Infusion end (IV) or last device (intranasal)."
    )
    discharged_at = models.DateTimeField(null=True, blank=True)
    aborted_at = models.DateTimeField(null=True, blank=True)
    abort_reason = models.TextField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    history = HistoricalRecords()
    objects = SessionQuerySet.as_manager()

    class Meta:
        ordering = ["-scheduled_at", "-id"]
        permissions = [
            ("dose_treatmentsession", "Can record doses and vitals during a session"),
            ("acknowledge_alert", "Can acknowledge critical alerts"),
            ("discharge_treatmentsession", "Can sign a discharge"),
            ("decide_predose", "Can record the prescriber's proceed / defer decision"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="aborted") | ~Q(abort_reason=""),
                name="session_abort_has_reason",
            ),
            models.CheckConstraint(
                condition=Q(status="discharged", locked_at__isnull=False)
                | (~Q(status="discharged") & Q(locked_at__isnull=True)),
                name="session_discharged_iff_locked",
            ),
        ]
        indexes = [
            # The floor board: a site's active sessions.
            models.Index(fields=["site", "status"], name="session_floor"),
            # Sessions on the patient chart, newest first.
            models.Index(fields=["patient", "-scheduled_at"], name="session_patient"),
            # Compliance (SPEC §C5): a site's sessions dosed, and discharged, in a date range.
            models.Index(fields=["site", "dose_started_at"], name="session_site_dosed"),
            models.Index(fields=["site", "discharged_at"], name="session_site_discharged"),
        ]

    def __str__(self) -> str:
        return f"Session {self.scheduled_at:%Y-%m-%d} ({self.get_status_display()})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def rules(self):
        return self.course.protocol_version.parsed

    def signed_content(self) -> dict:
        """The discharge signs the whole session: its fields and every child row."""
        excluded = {"id", "status", "locked_at", "discharged_at", "created_at"}
        content = without_unset_additions(
            self._meta.db_table,
            {
                f.attname: getattr(self, f.attname)
                for f in self._meta.concrete_fields
                if f.attname not in excluded
            },
        )
        content["doses"] = [d.content() for d in self.doses.order_by("id")]
        content["vitals"] = [v.content() for v in self.vitals.order_by("id")]
        content["alerts"] = [a.content() for a in self.alerts.order_by("id")]
        content["checks"] = [c.content() for c in self.checks.order_by("id")]
        content["observations"] = [o.content() for o in self.observations.order_by("id")]
        content["discharge"] = self.discharge.content() if hasattr(self, "discharge") else None
        return content


class SessionChildQuerySet(TrackedQuerySet):
    """Children of a discharged session refuse bulk changes; nothing is deleted."""

    def update(self, **kwargs):
        if self.filter(session__locked_at__isnull=False).exists():
            raise RecordLocked("This session is discharged and locked.")
        return super().update(**kwargs)

    def delete(self):
        raise RecordLocked("Clinical records are never deleted.")


class SessionChild(models.Model):
    """A row that belongs to a session and locks with it (SPEC §S3: 'and its children')."""

    objects = SessionChildQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if TreatmentSession._base_manager.filter(
            pk=self.session_id, locked_at__isnull=False
        ).exists():
            raise RecordLocked("This session is discharged and locked.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise RecordLocked("Clinical records are never deleted.")

    def content(self) -> dict:
        return without_unset_additions(
            self._meta.db_table,
            {
                f.attname: getattr(self, f.attname)
                for f in self._meta.concrete_fields
                if f.attname not in {"session_id"}
            },
        )


class DrugLot(NeverDeleted):
    """A lot of ketamine / esketamine held at a site (Schedule III, SPEC §M12)."""

    class Drug(models.TextChoices):
        KETAMINE = "ketamine", "Ketamine"
        ESKETAMINE = "esketamine", "Esketamine (Spravato)"

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="drug_lots")
    drug = models.CharField(max_length=20, choices=Drug.choices)
    lot_number = models.CharField(max_length=40)
    concentration_mg_per_ml = models.DecimalField(max_digits=6, decimal_places=2)
    expires_on = models.DateField()
    received_mg = models.DecimalField(max_digits=9, decimal_places=2)
    received_at = models.DateTimeField()
    history = HistoricalRecords()
    objects = TrackedQuerySet.as_manager()

    class Meta:
        ordering = ["drug", "expires_on", "lot_number"]
        constraints = [
            models.UniqueConstraint(fields=["site", "drug", "lot_number"], name="lot_unique"),
            models.CheckConstraint(condition=Q(received_mg__gt=0), name="lot_received_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.get_drug_display()} lot {self.lot_number}"


class ControlledSubstanceEntry(NeverDeleted):
    """One line of the controlled-substance register: append-only, with a running balance."""

    class Kind(models.TextChoices):
        RECEIPT = "receipt", "Received"
        ADMINISTRATION = "administration", "Administered"
        WASTE = "waste", "Wasted"

    lot = models.ForeignKey(DrugLot, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    at = models.DateTimeField()
    amount_mg = models.DecimalField(max_digits=9, decimal_places=2)
    volume_ml = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)
    balance_mg = models.DecimalField(
        max_digits=10, decimal_places=2, help_text="Running balance of the lot after this line."
    )
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    witness = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    prescriber = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    session = models.ForeignKey(
        TreatmentSession, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reason = models.TextField(max_length=1000, blank=True)

    class Meta:
        ordering = ["lot", "id"]
        verbose_name_plural = "controlled-substance entries"
        constraints = [
            models.CheckConstraint(condition=Q(amount_mg__gt=0), name="cs_amount_positive"),
            models.CheckConstraint(
                condition=~Q(kind="waste")
                | (Q(witness__isnull=False) & ~Q(witness=models.F("by"))),
                name="cs_waste_has_distinct_witness",
            ),
        ]
        indexes = [
            # The register and CSV export: one site's entries in time order.
            models.Index(fields=["at", "id"], name="cs_entry_time"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount_mg} mg"


class Incident(NeverDeleted):
    class Kind(models.TextChoices):
        CS_DISCREPANCY = "cs-discrepancy", "Controlled-substance discrepancy"

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="incidents")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    lot = models.ForeignKey(DrugLot, on_delete=models.PROTECT, null=True, blank=True)
    description = models.TextField(max_length=2000)
    opened_at = models.DateTimeField()
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    history = HistoricalRecords()
    objects = TrackedQuerySet.as_manager()

    class Meta:
        ordering = ["-opened_at"]
        indexes = [
            # Compliance (SPEC §C5): a site's incidents opened in a date range.
            models.Index(fields=["site", "kind", "opened_at"], name="incident_site_opened"),
        ]

    def __str__(self) -> str:
        return self.get_kind_display()


class DoseAdministration(SessionChild):
    """The dose record of SPEC §M2."""

    class Route(models.TextChoices):
        IV = "iv", "IV infusion"
        IM = "im", "Intramuscular"
        INTRANASAL = "intranasal", "Intranasal"

    session = models.ForeignKey(TreatmentSession, on_delete=models.PROTECT, related_name="doses")
    lot = models.ForeignKey(DrugLot, on_delete=models.PROTECT, related_name="+")
    route = models.CharField(max_length=20, choices=Route.choices)
    concentration_mg_per_ml = models.DecimalField(max_digits=6, decimal_places=2)
    dose_mg = models.DecimalField(max_digits=7, decimal_places=2)
    weight_kg = models.DecimalField(max_digits=5, decimal_places=1, null=True, blank=True)
    weight_measured_on = models.DateField(null=True, blank=True)
    dose_mg_per_kg = models.DecimalField(max_digits=6, decimal_places=3, null=True, blank=True)
    volume_ml = models.DecimalField(max_digits=7, decimal_places=2)
    devices = models.PositiveSmallIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    administered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    prescriber = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The prescriber present on site.",
    )
    override_reason = models.TextField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.dose_mg} mg {self.get_route_display()}"


class VitalReading(SessionChild):
    """One set of vital signs (SPEC §M3). Wrong ones are marked in error, never edited (§M8)."""

    session = models.ForeignKey(TreatmentSession, on_delete=models.PROTECT, related_name="vitals")
    measured_at = models.DateTimeField()
    entered_at = models.DateTimeField()
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    # A double-submitted form carries the same token and saves one reading.
    client_token = models.UUIDField(default=uuid.uuid4)
    sbp = models.PositiveSmallIntegerField("SBP", null=True, blank=True)
    dbp = models.PositiveSmallIntegerField("DBP", null=True, blank=True)
    hr = models.PositiveSmallIntegerField("HR", null=True, blank=True)
    rr = models.PositiveSmallIntegerField("RR", null=True, blank=True)
    spo2 = models.PositiveSmallIntegerField("SpO2", null=True, blank=True)
    temperature_c = models.DecimalField(
        "temperature (°C)", max_digits=4, decimal_places=1, null=True, blank=True
    )
    moaas = models.PositiveSmallIntegerField("MOAA/S", null=True, blank=True)
    is_predose = models.BooleanField(default=False)
    entered_in_error_at = models.DateTimeField(null=True, blank=True)
    entered_in_error_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    error_reason = models.TextField(max_length=500, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["measured_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "client_token"], name="vital_reading_once_per_token"
            ),
            models.CheckConstraint(
                condition=Q(entered_in_error_at__isnull=True) | ~Q(error_reason=""),
                name="vital_error_has_reason",
            ),
        ]
        indexes = [
            # The flowsheet and alert evaluation: one session's readings in clinical time.
            models.Index(fields=["session", "measured_at"], name="vital_session_time"),
        ]

    def __str__(self) -> str:
        return f"vitals @ {self.measured_at:%H:%M}"

    @property
    def is_late(self) -> bool:
        """Charted more than the protocol's late-entry minutes after it was measured (§M3)."""
        limit = timedelta(minutes=self.session.rules.late_entry_minutes)
        return self.entered_at - self.measured_at > limit

    @property
    def is_valid(self) -> bool:
        return self.entered_in_error_at is None


class Alert(SessionChild):
    class Level(models.TextChoices):
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    session = models.ForeignKey(TreatmentSession, on_delete=models.PROTECT, related_name="alerts")
    reading = models.ForeignKey(VitalReading, on_delete=models.PROTECT, related_name="alerts")
    level = models.CharField(max_length=10, choices=Level.choices)
    field = models.CharField(max_length=20)
    message = models.CharField(max_length=300)
    raised_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    action_taken = models.TextField(max_length=1000, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["raised_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(acknowledged_at__isnull=True) | ~Q(action_taken=""),
                name="alert_ack_has_action",
            ),
        ]
        indexes = [
            # Open critical alerts on the session page and the floor board.
            models.Index(fields=["session", "level", "acknowledged_at"], name="alert_open"),
            # Compliance (SPEC §C5): critical alerts raised in a date range.
            models.Index(fields=["level", "raised_at"], name="alert_level_raised"),
        ]

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


class RequiredCheckQuerySet(SessionChildQuerySet):
    def required(self) -> RequiredCheckQuerySet:
        """Checks still required: not withdrawn by a re-plan (SPEC §M6)."""
        return self.filter(voided_at__isnull=True)


class RequiredCheck(SessionChild):
    """A check the protocol schedule requires (SPEC §M6), materialized when dosing starts and
    re-planned from what happened (the actual infusion end, the discharge); a warning that asks
    for a repeat reading adds a timed one (§M5)."""

    session = models.ForeignKey(TreatmentSession, on_delete=models.PROTECT, related_name="checks")
    code = models.CharField(max_length=40)
    label = models.CharField(max_length=120)
    measures = models.JSONField()
    due_at = models.DateTimeField(null=True, blank=True, help_text="Empty: due before discharge.")
    window_minutes = models.PositiveSmallIntegerField(help_text="Minutes after the due time.")
    window_before_minutes = models.PositiveSmallIntegerField(
        default=0, help_text="Minutes before the due time a reading still counts."
    )
    overdue_at = models.DateTimeField(
        null=True, blank=True, help_text="End of the window: unrecorded after this, it is overdue."
    )
    satisfied_at = models.DateTimeField(null=True, blank=True)
    excused_reason = models.TextField(max_length=500, blank=True)
    excused_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Met only by readings measured strictly before the dose started (SPEC §M6).
    before_dose = models.BooleanField(default=False)
    # A repeat-reading check (SPEC §M5): met only by a reading measured after this one.
    after_reading = models.ForeignKey(
        "VitalReading", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Withdrawn by a re-plan (the infusion ended earlier, or discharge came first): kept, never
    # deleted, and no longer required.
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.CharField(max_length=300, blank=True)
    history = HistoricalRecords()
    objects = RequiredCheckQuerySet.as_manager()

    class Meta:
        ordering = ["due_at", "id"]
        indexes = [
            # The next due check on the session page and the floor board.
            models.Index(fields=["session", "satisfied_at", "due_at"], name="check_due"),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def window_end(self):
        return self.overdue_at

    @property
    def is_done(self) -> bool:
        return self.satisfied_at is not None or bool(self.excused_reason)

    @property
    def is_required(self) -> bool:
        return self.voided_at is None


class Observation(SessionChild):
    """Mental state and adverse events (SPEC §M7): CADSS, free text, adverse events."""

    class Kind(models.TextChoices):
        CADSS = "cadss", "CADSS total"
        NOTE = "note", "Observation"
        ADVERSE_EVENT = "adverse-event", "Adverse event"

    class Severity(models.TextChoices):
        MILD = "mild", "Mild"
        MODERATE = "moderate", "Moderate"
        SEVERE = "severe", "Severe"

    session = models.ForeignKey(
        TreatmentSession, on_delete=models.PROTECT, related_name="observations"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    observed_at = models.DateTimeField()
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    cadss_total = models.PositiveSmallIntegerField(null=True, blank=True)
    text = models.TextField(max_length=2000, blank=True)
    event_type = models.CharField(max_length=100, blank=True)
    severity = models.CharField(max_length=10, choices=Severity.choices, blank=True)
    action = models.TextField(max_length=1000, blank=True)
    outcome = models.TextField(max_length=1000, blank=True)
    serious = models.BooleanField(default=False, help_text="Serious: flagged for the REMS report.")
    history = HistoricalRecords()

    class Meta:
        ordering = ["observed_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(cadss_total__isnull=True) | Q(cadss_total__lte=92),
                name="observation_cadss_range",
            ),
        ]

    def __str__(self) -> str:
        return self.get_kind_display()


class Discharge(SessionChild):
    """Discharge criteria (SPEC §M9), signed with meaning 'discharged'."""

    session = models.OneToOneField(
        TreatmentSession, on_delete=models.PROTECT, related_name="discharge"
    )
    aldrete_activity = models.PositiveSmallIntegerField()
    aldrete_respiration = models.PositiveSmallIntegerField()
    aldrete_circulation = models.PositiveSmallIntegerField()
    aldrete_consciousness = models.PositiveSmallIntegerField()
    aldrete_spo2 = models.PositiveSmallIntegerField()
    moaas = models.PositiveSmallIntegerField()
    escort_present = models.BooleanField()
    no_driving_instruction_given = models.BooleanField()
    prescriber_decision = models.TextField(max_length=1000, blank=True)
    ready_to_leave_minutes = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="REMS: minutes after which the patient would be ready to leave without the "
        "2-hour rule.",
    )
    notes = models.TextField(max_length=2000, blank=True)
    # SPEC §M9: criteria entered at discharge are checked against the recorded data. Each
    # disagreement found (item, entered, supported by the record, which reading) is stored with
    # the written reason the discharging clinician gave for it.
    disagreements = models.JSONField(default=list, blank=True)
    disagreement_reason = models.TextField(max_length=2000, blank=True)
    discharged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    aldrete_activity__lte=2,
                    aldrete_respiration__lte=2,
                    aldrete_circulation__lte=2,
                    aldrete_consciousness__lte=2,
                    aldrete_spo2__lte=2,
                    moaas__lte=5,
                ),
                name="discharge_score_ranges",
            ),
        ]

    def __str__(self) -> str:
        return "Discharge"

    @property
    def aldrete_total(self) -> int:
        return (
            self.aldrete_activity
            + self.aldrete_respiration
            + self.aldrete_circulation
            + self.aldrete_consciousness
            + self.aldrete_spo2
        )
