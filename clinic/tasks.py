"""Periodic tasks that belong to no clinical step."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from clinic.models import Heartbeat


@shared_task(name="clinic.tasks.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Beat sends this every minute; the worker stamps the time. /healthz shows its age."""
    Heartbeat.objects.update_or_create(name="worker", defaults={"beat_at": timezone.now()})
