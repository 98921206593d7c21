"""`manage.py verify_audit`: walk every hash chain and re-hash every signature (SPEC §C4).

Exits 1 when anything is broken, after printing the first broken link.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from audit.services import verification_record

BAR = 30


class Command(BaseCommand):
    help = "Verify the audit trail's hash chains and every signature; exit 1 on any break."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--show", type=int, default=20, help="How many problems to list (default 20)."
        )

    def handle(self, *args, show: int, **options) -> None:
        run, report = verification_record(
            triggered_by="manage.py verify_audit", progress=self._progress()
        )
        self.stderr.write("")
        self.stdout.write(
            f"Checked {report.links} links in {report.chains} chains "
            f"and {report.signatures} signatures (run {run.pk})."
        )
        if report.ok:
            self.stdout.write(self.style.SUCCESS("Audit trail intact: no broken link."))
            return
        self.stdout.write(self.style.ERROR(f"First broken link: {report.first_break}"))
        for problem in report.problems[1:show]:
            self.stdout.write(f"  {problem}")
        if len(report.problems) > show:
            self.stdout.write(f"  … and {len(report.problems) - show} more")
        raise CommandError(f"{len(report.problems)} problem(s) in the audit trail.", returncode=1)

    def _progress(self):
        interactive = sys.stderr.isatty()
        last = {"percent": -1}

        def show(done: int, total: int) -> None:
            percent = 100 * done // total if total else 100
            if percent == last["percent"]:
                return
            last["percent"] = percent
            filled = BAR * percent // 100
            line = f"[{'#' * filled}{'.' * (BAR - filled)}] {percent:3d}%  {done}/{total} links"
            if interactive:
                self.stderr.write("\r" + line, ending="")
                self.stderr.flush()
            elif percent % 10 == 0:
                self.stderr.write(line)

        return show
