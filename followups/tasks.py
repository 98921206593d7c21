"""Celery tasks for Step 3: thin, idempotent by state (the reminder rows are the to-do list)."""

from __future__ import annotations

from celery import shared_task

from followups.services import ensure_site_duties, sweep_due_reminders


@shared_task(
    name="followups.tasks.sweep_reminders", ignore_result=True, time_limit=110, soft_time_limit=100
)
def sweep_reminders() -> dict[str, int]:
    """Beat sends this every minute; overlapping runs are safe (rows are claimed)."""
    return sweep_due_reminders()


@shared_task(name="followups.tasks.site_duties", ignore_result=True, time_limit=110)
def site_duties() -> int:
    """Daily: the biennial controlled-substance inventory duty of each site (SPEC §F6)."""
    return ensure_site_duties()
