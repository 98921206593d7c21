"""Run the reminder sweep once (for cron, or the embedded default without a worker)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from followups.services import sweep_due_reminders


class Command(BaseCommand):
    help = "Send every due reminder once (the same sweep beat runs every minute)."

    def handle(self, *args, **options):
        counts = sweep_due_reminders()
        self.stdout.write(
            "Reminders: {sent} sent, {cancelled} cancelled, {deferred} deferred to after quiet "
            "hours, {failed} failed (will retry).".format(**counts)
        )
