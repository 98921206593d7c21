"""The audit trail's own tables (SPEC §C2–C4). All are append-only in the database.

Every history row, signature, failed signing attempt, drug-register entry and access-log entry
is linked into a hash chain by one `AuditEvent`. The event also indexes the row for the audit
viewer (who, when, which record, which patient, which site), so the viewer reads one table.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditChain(models.Model):
    """The head of one hash chain. Appending locks this row, so chains are kept per site and
    UTC day: writers at different sites never queue on one lock, and a day's chain is short."""

    key = models.CharField(max_length=60, unique=True)
    genesis = models.CharField(max_length=64, help_text="The predecessor hash of link 1.")
    length = models.PositiveBigIntegerField(default=0)
    head = models.CharField(max_length=64, help_text="The hash of the last link.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key


class AuditEvent(models.Model):
    """One link of a chain: the hash of its predecessor and of the chained row's content."""

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        CHANGED = "changed", "Changed"
        DELETED = "deleted", "Deleted"
        SIGNED = "signed", "Signed"
        SIGNING_REFUSED = "signing-refused", "Signing refused"
        RECORDED = "recorded", "Register entry"
        VIEWED = "viewed", "Viewed"
        EXPORTED = "exported", "Exported"
        SIGNED_IN = "signed-in", "Signed in"

    chain = models.ForeignKey(AuditChain, on_delete=models.PROTECT, related_name="events")
    seq = models.PositiveBigIntegerField()
    occurred_at = models.DateTimeField()
    action = models.CharField(max_length=20, choices=Action.choices)
    # The chained row: a history row, a signature, an access-log entry...
    source = models.CharField(max_length=100)
    source_id = models.PositiveBigIntegerField()
    # The record it is about, for the viewer's per-record trail.
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        related_name="+",
    )
    site = models.ForeignKey(
        "clinic.Site", on_delete=models.DO_NOTHING, db_constraint=False, null=True, related_name="+"
    )
    patient = models.ForeignKey(
        "patients.Patient",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        related_name="+",
    )
    reason = models.TextField(blank=True)
    content_sha256 = models.CharField(max_length=64)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        permissions = [("view_compliance", "Can view the compliance dashboard and its lists")]
        constraints = [
            models.UniqueConstraint(fields=["chain", "seq"], name="auditevent_one_link_per_seq"),
            models.UniqueConstraint(
                fields=["source", "source_id"], name="auditevent_one_link_per_row"
            ),
        ]
        indexes = [
            # The audit viewer filtered by site, newest first (keyset pages).
            models.Index(fields=["site", "-occurred_at", "-id"], name="auditevent_site"),
            # A patient's timeline.
            models.Index(fields=["patient", "-occurred_at", "-id"], name="auditevent_patient"),
            # A user's activity.
            models.Index(fields=["user", "-occurred_at", "-id"], name="auditevent_user"),
            # One record's trail.
            models.Index(fields=["object_type", "object_id"], name="auditevent_record"),
            # The unfiltered viewer and date ranges.
            models.Index(fields=["-occurred_at", "-id"], name="auditevent_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.chain.key}#{self.seq}"


class AccessLog(models.Model):
    """A view of a patient's chart or clinical record, or an export (SPEC §C3).

    Names what was seen and by whom, from where; never a clinical value, never a query string.
    """

    class Action(models.TextChoices):
        VIEW = "view", "Viewed"
        EXPORT = "export", "Exported"
        SIGN_IN = "sign-in", "Signed in"

    at = models.DateTimeField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=10, choices=Action.choices)
    what = models.CharField(max_length=120, help_text="The page or export, e.g. 'Session report'.")
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    site = models.ForeignKey(
        "clinic.Site", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    path = models.CharField(max_length=300)
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.what} @ {self.at:%Y-%m-%d %H:%M}"


class VerificationRun(models.Model):
    """One walk of every chain by `verify_audit` (nightly, or by hand). Kept as evidence."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    ok = models.BooleanField()
    chains = models.PositiveIntegerField()
    links = models.PositiveBigIntegerField()
    signatures = models.PositiveBigIntegerField()
    problems = models.PositiveIntegerField()
    first_break = models.TextField(blank=True)
    triggered_by = models.CharField(max_length=40)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"verification {self.started_at:%Y-%m-%d %H:%M} {'ok' if self.ok else 'FAILED'}"


class Finding(models.Model):
    """One problem a verification run found: a broken link or a signature that no longer
    matches its record. The compliance dashboard counts these."""

    class Kind(models.TextChoices):
        BROKEN_LINK = "broken-link", "Broken chain link"
        ROW_ALTERED = "row-altered", "Row altered"
        ROW_MISSING = "row-missing", "Row missing"
        ROW_UNCHAINED = "row-unchained", "Row outside any chain"
        HEAD_MISMATCH = "head-mismatch", "Chain head does not match its last link"
        SIGNATURE_INVALID = "signature-invalid", "Signature invalid"

    run = models.ForeignKey(VerificationRun, on_delete=models.PROTECT, related_name="findings")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    chain_key = models.CharField(max_length=60, blank=True)
    seq = models.PositiveBigIntegerField(null=True, blank=True)
    source = models.CharField(max_length=100, blank=True)
    source_id = models.PositiveBigIntegerField(null=True, blank=True)
    site = models.ForeignKey(
        "clinic.Site", on_delete=models.DO_NOTHING, db_constraint=False, null=True, related_name="+"
    )
    occurred_at = models.DateTimeField(null=True, blank=True)
    detail = models.TextField()

    class Meta:
        ordering = ["id"]
        indexes = [
            # Dashboard: invalid signatures of a site in the latest run.
            models.Index(fields=["run", "kind", "site"], name="finding_dashboard"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.detail}"
