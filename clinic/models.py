"""Cross-cutting models: sites, staff accounts and the worker heartbeat."""

from __future__ import annotations

import zoneinfo
from functools import cached_property

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

TIME_ZONE_UNKNOWN = "Unknown time zone; use an IANA name such as Europe/London."


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
    history = HistoricalRecords()

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


class User(AbstractUser):
    """A staff member. Roles are groups; sites are memberships."""

    sites = models.ManyToManyField(Site, related_name="staff", blank=True)
    is_service_account = models.BooleanField(
        default=False,
        help_text="The named account that scheduled jobs act as. It cannot log in.",
    )
    history = HistoricalRecords(excluded_fields=["password", "last_login"], m2m_fields=[sites])

    class Meta:
        ordering = ["last_name", "first_name", "username"]

    def __str__(self) -> str:
        return self.printed_name

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
