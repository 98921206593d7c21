"""Cross-cutting services: the service account, history attribution, site membership."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, models, transaction

from clinic.models import User


def service_account() -> User:
    """The named account scheduled jobs and commands act as (SPEC §U). It cannot log in."""
    username = settings.SERVICE_ACCOUNT_USERNAME
    user = User.objects.filter(username=username).first()
    if user is not None:
        return user
    # One insert, so one history row, with its reason.
    user = User(
        username=username,
        first_name="Vigil",
        last_name="service account",
        is_service_account=True,
        password=make_password(None),
    )
    user._change_reason = "Service account for scheduled jobs created"
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:  # created meanwhile by another process
        return User.objects.get(username=username)
    return user


def attribute(instance: models.Model, *, acting_user: User, reason: str) -> None:
    """Tell simple-history who made the next save of `instance`, and why."""
    instance._history_user = acting_user
    instance._change_reason = reason


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
