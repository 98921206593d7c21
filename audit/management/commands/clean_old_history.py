"""Replaces simple-history's `clean_old_history`: history is append-only (SPEC §C2)."""

from audit.management.refused import RefusedCommand


class Command(RefusedCommand):
    pass
