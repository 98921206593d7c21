from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

REFUSED = (
    "Refused: the change history is append-only and hash-chained (SPEC §C2, §C4). "
    "History rows are never deleted, and rows written outside the services would break "
    "the chain that verify_audit checks."
)


class RefusedCommand(BaseCommand):
    help = "Refused in Vigil: history is append-only."

    def add_arguments(self, parser) -> None:
        # Accept whatever simple-history's command accepted, so the refusal is what is seen.
        parser.add_argument("args", nargs="*")
        parser.add_argument("--days", type=int)
        parser.add_argument("--auto", action="store_true")
        parser.add_argument("--dry", action="store_true")
        parser.add_argument("-m", "--minutes", type=int)
        parser.add_argument("--excluded_fields", nargs="+")
        parser.add_argument("--base-manager", action="store_true")
        parser.add_argument("--batchsize", type=int)

    def handle(self, *args, **options) -> None:
        raise CommandError(REFUSED)
