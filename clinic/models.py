"""Cross-cutting models: sites, staff accounts and the worker heartbeat."""

from __future__ import annotations

import zoneinfo
from functools import cached_property

from django.contrib.auth.models import AbstractUser, UserManager
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

TIME_ZONE_UNKNOWN = "Unknown time zone; use an IANA name such as Europe/London."


# --- Columns added after records existed (SPEC §S3, §C4) -----------------------------------------
#
# Signatures and audit links hash a record's columns. A column added by a later migration would
# change the hash of every row written before it, and `verify_audit` and the signature check would
# call them all altered. So a column added later is hashed only when it holds something other than
# the value the migration gave the existing rows (NULL, '', false, an empty list): old rows hash as
# they did, new rows that use the column are covered by it. Every such column is listed here, for
# the table and its history table, with the migration that added it.

ADDED_LATER: dict[str, frozenset[str]] = {
    # monitoring 0006: checks re-planned, decision bound to its reading, discharge agreement
    "monitoring_treatmentsession": frozenset({"predose_decision_reading_id"}),
    "monitoring_requiredcheck": frozenset(
        {"before_dose", "after_reading_id", "voided_at", "void_reason"}
    ),
    "monitoring_discharge": frozenset({"disagreements", "disagreement_reason"}),
    # protocols 0005: age override, C-SSRS time administered, GAD-7 flag
    "protocols_treatmentcourse": frozenset({"age_override_reason", "age_override_by_id"}),
    "protocols_assessment": frozenset({"cssrs_administered_at", "gad7_evaluation_flag"}),
}
ADDED_LATER.update(
    {
        f"{table.split('_', 1)[0]}_historical{table.split('_', 1)[1]}": columns
        for table, columns in list(ADDED_LATER.items())
    }
)
_UNSET = (None, "", False, 0, "[]", "{}")


def _unset(value) -> bool:
    if isinstance(value, (list, dict)):
        return not value
    return any(
        value is unset or (value == unset and type(value) is type(unset)) for unset in _UNSET
    )


def without_unset_additions(table: str, values: dict) -> dict:
    """`values` (column or attribute name → value) without the columns added later that still
    hold their migration default: what a signature or audit link hashes."""
    added = ADDED_LATER.get(table)
    if not added:
        return values
    return {k: v for k, v in values.items() if k not in added or not _unset(v)}


class BulkWriteRefused(RuntimeError):
    """A bulk write on a history-tracked model: it would leave no history row (SPEC §C1)."""


class TrackedQuerySet(models.QuerySet):
    """History-tracked models change one row at a time, through a service that names who and
    why. Bulk paths skip simple-history, so they are refused."""

    def update(self, **kwargs):
        raise BulkWriteRefused(
            f"Bulk update of {self.model._meta.verbose_name_plural} skips the change history; "
            "save each row through its service."
        )

    def delete(self):
        raise BulkWriteRefused(f"{self.model._meta.verbose_name_plural} are never deleted in bulk.")

    def bulk_create(self, objs, *args, **kwargs):
        raise BulkWriteRefused(
            f"bulk_create of {self.model._meta.verbose_name_plural} skips the change history."
        )

    def bulk_update(self, objs, fields, *args, **kwargs):
        raise BulkWriteRefused(
            f"bulk_update of {self.model._meta.verbose_name_plural} skips the change history."
        )


class StaffManager(UserManager.from_queryset(TrackedQuerySet)):
    """Django's UserManager (create_user, createsuperuser) without bulk writes."""


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(TIME_ZONE_UNKNOWN)


class Site(models.Model):
    """A clinic location. Patients have a home site; staff belong to one or more sites."""

    name = models.CharField(max_length=120, unique=True)
    time_zone = models.CharField(
        max_length=64, default="Europe/London", validators=[validate_time_zone]
    )
    address = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    quiet_hours_start = models.TimeField(
        null=True, blank=True, help_text="Local time from which no reminder is sent (e.g. 21:00)."
    )
    quiet_hours_end = models.TimeField(
        null=True, blank=True, help_text="Local time from which reminders resume (e.g. 07:30)."
    )
    history = HistoricalRecords()
    objects = TrackedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @cached_property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)


class Role(models.TextChoices):
    """The five roles of SPEC §U; each is a Django group of the same name."""

    NURSE = "Nurse"
    PSYCHIATRIST = "Psychiatrist"
    ANESTHESIOLOGIST = "Anesthesiologist"
    GP = "General practitioner"
    ADMINISTRATOR = "Administrator"


# Kept by name so the admin can write a staff member's one history row once the memberships
# are saved too (clinic/admin.py StaffAdmin).
STAFF_HISTORY = HistoricalRecords(excluded_fields=["password", "last_login"], m2m_fields=["sites"])


class User(AbstractUser):
    """A staff member. Roles are groups; sites are memberships."""

    sites = models.ManyToManyField(Site, related_name="staff", blank=True)
    is_service_account = models.BooleanField(
        default=False,
        help_text="The named account that scheduled jobs act as. It cannot log in.",
    )
    history = STAFF_HISTORY
    objects = StaffManager()

    class Meta:
        ordering = ["last_name", "first_name", "username"]

    def __str__(self) -> str:
        return self.printed_name

    def save(self, *args, **kwargs):
        # A sign-in stamps last_login, which the history does not track: the access log
        # records sign-ins, and the history keeps to changes of the account itself.
        if set(kwargs.get("update_fields") or ()) == {"last_login"}:
            self.skip_history_when_saving = True
            try:
                return super().save(*args, **kwargs)
            finally:
                del self.skip_history_when_saving
        return super().save(*args, **kwargs)

    @property
    def printed_name(self) -> str:
        return self.get_full_name() or self.username

    @cached_property
    def role_names(self) -> frozenset[str]:
        return frozenset(self.groups.values_list("name", flat=True))

    def has_role(self, role: Role) -> bool:
        return role.value in self.role_names

    @cached_property
    def site_ids(self) -> frozenset[int]:
        return frozenset(self.sites.filter(is_active=True).values_list("id", flat=True))


class Heartbeat(models.Model):
    """Written by the periodic heartbeat task: proof that beat and the worker run."""

    name = models.CharField(max_length=40, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} @ {self.beat_at:%Y-%m-%d %H:%M:%S}"


class RecordLocked(Exception):
    """A signed record (or a child of one) was about to change. Corrections are addenda."""


class LockableQuerySet(TrackedQuerySet):
    """Bulk paths cannot touch locked rows, and nothing clinical is ever deleted (SPEC §S3)."""

    def update(self, **kwargs):
        if self.filter(locked_at__isnull=False).exists():
            raise RecordLocked("Signed records cannot be changed by a bulk update.")
        return super().update(**kwargs)

    def bulk_update(self, objs, fields, *args, **kwargs):
        if self.filter(pk__in=[o.pk for o in objs], locked_at__isnull=False).exists():
            raise RecordLocked("Signed records cannot be changed by a bulk update.")
        return super().bulk_update(objs, fields, *args, **kwargs)

    def delete(self):
        raise RecordLocked("Clinical records are never deleted.")


class NeverDeleted(models.Model):
    """Clinical records are corrected, voided or withdrawn with a reason, never deleted
    (SPEC §C2); bulk deletes are refused by TrackedQuerySet, this refuses the instance path."""

    class Meta:
        abstract = True

    def delete(self, *args, **kwargs):
        raise RecordLocked("Clinical records are never deleted; void them with a reason.")


class LockableModel(models.Model):
    """A record that a signature locks. The database triggers refuse the same changes."""

    locked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = LockableQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        # An invariant, not workflow: whatever path calls save(), a locked row stays as signed.
        if (
            not self._state.adding
            and type(self)._base_manager.filter(pk=self.pk, locked_at__isnull=False).exists()
        ):
            raise RecordLocked(f"{self._meta.verbose_name} is signed and locked.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise RecordLocked("Clinical records are never deleted.")

    @property
    def is_locked(self) -> bool:
        return self.locked_at is not None


class Signature(models.Model):
    """An electronic signature (SPEC §S1–S5) over one record's canonical content."""

    class Meaning(models.TextChoices):
        AUTHORED = "authored", "Authored"
        REVIEWED = "reviewed", "Reviewed"
        APPROVED = "approved", "Approved"
        DECLINED = "declined", "Declined"
        WITNESSED = "witnessed", "Witnessed"
        DISCHARGED = "discharged", "Discharged"

    content_type = models.ForeignKey("contenttypes.ContentType", on_delete=models.PROTECT)
    object_id = models.PositiveBigIntegerField()
    signer = models.ForeignKey(User, on_delete=models.PROTECT, related_name="signatures")
    printed_name = models.CharField(max_length=300, help_text="The signer's name as it was then.")
    signed_at = models.DateTimeField()
    meaning = models.CharField(max_length=20, choices=Meaning.choices)
    content_sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["signed_at", "id"]
        indexes = [
            # The signatures of one record, on every page that shows it.
            models.Index(fields=["content_type", "object_id"], name="signature_record"),
        ]

    def __str__(self) -> str:
        return f"{self.get_meaning_display()} by {self.printed_name}"


class SignatureFailure(models.Model):
    """A signing attempt refused for a wrong password: recorded, nothing else changes (§S1)."""

    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    content_type = models.ForeignKey("contenttypes.ContentType", on_delete=models.PROTECT)
    object_id = models.PositiveBigIntegerField()
    attempted_at = models.DateTimeField(auto_now_add=True)
    reason = models.CharField(max_length=100)

    def __str__(self) -> str:
        return f"failed signature {self.attempted_at:%Y-%m-%d %H:%M}"


class Addendum(LockableModel):
    """A correction after signing (§S4): text and reason, linked to the original, signed."""

    content_type = models.ForeignKey("contenttypes.ContentType", on_delete=models.PROTECT)
    object_id = models.PositiveBigIntegerField()
    text = models.TextField(max_length=5000)
    reason = models.TextField(max_length=1000)
    author = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
    history = HistoricalRecords()

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "addenda"
        indexes = [
            # The addenda shown under one record.
            models.Index(fields=["content_type", "object_id"], name="addendum_record"),
        ]

    def __str__(self) -> str:
        return f"addendum {self.created_at:%Y-%m-%d %H:%M}"

    def signed_content(self) -> dict:
        return {
            "record": [self.content_type_id, self.object_id],
            "text": self.text,
            "reason": self.reason,
            "author": self.author_id,
            "created_at": self.created_at.isoformat(),
        }


class Notification(models.Model):
    """An in-app notification. It names what needs attention, not the clinical values."""

    class Kind(models.TextChoices):
        SUICIDE_RISK = "suicide-risk", "Suicide-risk flag"
        ASSESSMENT_SUBMITTED = "assessment-submitted", "Assessment submitted"
        CRITICAL_ALERT = "critical-alert", "Critical vital-sign alert"
        FOLLOWUP_REMINDER = "followup-reminder", "Follow-up reminder"
        FOLLOWUP_RISK = "followup-risk", "Risk answer in a follow-up"
        AUDIT_BROKEN = "audit-broken", "Audit trail verification failed"
        INFO = "info", "Information"

    recipient = models.ForeignKey(User, on_delete=models.PROTECT, related_name="notifications")
    kind = models.CharField(max_length=40, choices=Kind.choices)
    title = models.CharField(max_length=200)
    url = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The unread count in the navigation and the user's notification list.
            models.Index(fields=["recipient", "read_at", "-created_at"], name="notification_inbox"),
        ]

    def __str__(self) -> str:
        return self.title
