"""Cross-cutting services: the service account, history attribution, site membership."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models

from clinic.models import User


def service_account() -> User:
    """The named account scheduled jobs and commands act as (SPEC §U). It cannot log in."""
    user, created = User.objects.get_or_create(
        username=settings.SERVICE_ACCOUNT_USERNAME,
        defaults={
            "first_name": "Vigil",
            "last_name": "service account",
            "is_service_account": True,
        },
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def attribute(instance: models.Model, *, acting_user: User, reason: str) -> None:
    """Tell simple-history who made the next save of `instance`, and why."""
    instance._history_user = acting_user
    instance._change_reason = reason


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
