"""Step 3 of the guideline: follow-ups (SPEC §F1–F3) and reminders (§F4–F5)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from clinic.models import LockableModel, Site
from patients.models import Patient
from protocols.models import TreatmentCourse

# The REMS monitoring form's code in the esketamine protocols (SPEC §F6, §D): the duty the REMS
# compliance figure judges, due within the version's `rems_form_due_days` of each session.
REMS_FORM_CODE = "rems_form"


class FollowUp(LockableModel):
    """One planned check after treatment. Open until completed, missed or cancelled; whether
    it is scheduled, due or overdue is derived from the clock (see `display_status`)."""

    class State(models.TextChoices):
        OPEN = "open", "Open"
        COMPLETED = "completed", "Completed"
        MISSED = "missed", "Missed"
        CANCELLED = "cancelled", "Cancelled"

    class Anchor(models.TextChoices):
        """What the due time counts from (SPEC §F1a). Empty for a site duty."""

        DISCHARGE = "discharge", "The session's discharge"
        COURSE_START = "course_start", "The course start"
        COURSE_COMPLETION = "course_completion", "The course's completion"

    class ContactMethod(models.TextChoices):
        PHONE = "phone", "Telephone"
        VIDEO = "video", "Video call"
        IN_PERSON = "in-person", "In person"
        MESSAGE = "message", "Secure message"

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="followups")
    patient = models.ForeignKey(
        Patient,
        on_delete=models.PROTECT,
        related_name="followups",
        null=True,
        blank=True,
        help_text="Empty for a site duty (the controlled-substance inventory).",
    )
    course = models.ForeignKey(
        TreatmentCourse,
        on_delete=models.PROTECT,
        related_name="followups",
        null=True,
        blank=True,
    )
    session = models.ForeignKey(
        "monitoring.TreatmentSession",
        on_delete=models.PROTECT,
        related_name="followups",
        null=True,
        blank=True,
    )
    code = models.CharField(max_length=60)
    label = models.CharField(max_length=200)
    due_at = models.DateTimeField()
    window_ends_at = models.DateTimeField()
    assigned_role = models.CharField(max_length=40)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    anchor = models.CharField(
        max_length=20, choices=Anchor.choices, blank=True, default=Anchor.DISCHARGE
    )
    instruments = models.JSONField(default=list, blank=True)
    # From the rule when planned (rules change with new versions; the follow-up keeps its own).
    requires_bp_in_person = models.BooleanField(
        default=False, help_text="An in-person contact must record the blood pressure."
    )
    signed_by_psychiatrist = models.BooleanField(default=False)
    escalation = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.OPEN)
    state_reason = models.TextField(max_length=1000, blank=True)
    # Completion (SPEC §F2)
    completed_at = models.DateTimeField(null=True, blank=True)
    completed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    contact_method = models.CharField(max_length=20, choices=ContactMethod.choices, blank=True)
    phq9_items = models.JSONField(null=True, blank=True)
    phq9_total = models.PositiveSmallIntegerField(null=True, blank=True)
    phq9_band = models.CharField(max_length=30, blank=True)
    gad7_items = models.JSONField(null=True, blank=True)
    gad7_total = models.PositiveSmallIntegerField(null=True, blank=True)
    gad7_band = models.CharField(max_length=30, blank=True)
    # GAD-7 >= 10 warrants further evaluation (SPEC §I, §F2): stored when the score is written.
    gad7_evaluation_flag = models.BooleanField(default=False)
    cssrs_answers = models.JSONField(null=True, blank=True)
    cssrs_risk = models.CharField(max_length=10, blank=True)
    side_effects = models.JSONField(default=dict, blank=True)
    sbp = models.PositiveSmallIntegerField(null=True, blank=True)
    dbp = models.PositiveSmallIntegerField(null=True, blank=True)
    general_health = models.TextField(max_length=2000, blank=True)
    outcome = models.TextField(max_length=2000, blank=True)
    next_action = models.TextField(max_length=1000, blank=True)
    risk_flagged = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Fields added after follow-ups were first signed and chained. Each is fixed when the row is
    # planned (anchor, requires_bp_in_person) or derived from a signed, tracked value
    # (gad7_evaluation_flag from gad7_total); kept out of the history rows and the signed
    # content, so that existing history links and signatures still verify (SPEC §C4, §S).
    LATER_FIELDS = ("anchor", "requires_bp_in_person", "gad7_evaluation_flag")
    history = HistoricalRecords(excluded_fields=list(LATER_FIELDS))

    class Meta:
        ordering = ["due_at", "id"]
        permissions = [
            ("complete_followup", "Can complete follow-ups"),
            ("sign_followup", "Can sign psychiatric follow-up reviews"),
        ]
        constraints = [
            # A plan is materialized once per session (or course) and follow-up code.
            models.UniqueConstraint(
                fields=["session", "code"],
                condition=Q(session__isnull=False),
                name="followup_once_per_session",
            ),
            # Cadence from the course start (SPEC §F1a): planned once per course, never again.
            models.UniqueConstraint(
                fields=["course", "code"],
                condition=Q(anchor="course_start", course__isnull=False),
                name="followup_once_per_course_anchored",
            ),
            models.CheckConstraint(
                condition=Q(state__in=["open", "completed"]) | ~Q(state_reason=""),
                name="followup_missed_cancelled_reason",
            ),
        ]
        indexes = [
            # Worklists: open follow-ups of a site and role by due time.
            models.Index(
                fields=["site", "assigned_role", "state", "due_at"], name="followup_worklist"
            ),
            # The patient chart's follow-ups.
            models.Index(fields=["patient", "due_at"], name="followup_patient"),
            # Compliance (SPEC §C5): a site's follow-ups due in a date range.
            models.Index(fields=["site", "due_at"], name="followup_site_due"),
            # The psychiatrist's worklist: GAD-7 results flagged for further evaluation.
            models.Index(
                fields=["course", "completed_at"],
                condition=Q(gad7_evaluation_flag=True),
                name="followup_gad7_flagged",
            ),
        ]

    def __str__(self) -> str:
        return self.label

    def display_status(self, now) -> str:
        if self.state != self.State.OPEN:
            return self.state
        if now > self.window_ends_at:
            return "overdue"
        return "due" if now >= self.due_at else "scheduled"

    def signed_content(self) -> dict:
        excluded = {"id", "locked_at", "created_at", *self.LATER_FIELDS}
        return {
            f.attname: getattr(self, f.attname)
            for f in self._meta.concrete_fields
            if f.attname not in excluded
        }


class Reminder(models.Model):
    """A reminder is a database row, not a queued message (SPEC §F4): beat sweeps due rows,
    claims them, sends, and records. The idempotency key makes each one unique."""

    class Channel(models.TextChoices):
        IN_APP = "in-app", "In-app"
        EMAIL = "email", "E-mail"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    idempotency_key = models.CharField(max_length=200, unique=True)
    followup = models.ForeignKey(
        FollowUp, on_delete=models.PROTECT, related_name="reminders", null=True, blank=True
    )
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reminders"
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    due_at = models.DateTimeField()
    title = models.CharField(max_length=200)
    url = models.CharField(max_length=300, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=64, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["due_at", "id"]
        indexes = [
            # The sweep: pending rows that are due, and expired leases.
            models.Index(fields=["state", "due_at"], name="reminder_sweep"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} reminder ({self.state})"
