"""The maintenance switch behind the audit tables' DELETE/TRUNCATE triggers (clinic/db.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db.backends.signals import connection_created

from clinic.db import AUDIT_MAINTENANCE


def _register_sqlite_function(sender, connection, **kwargs) -> None:
    if connection.vendor != "sqlite":
        return
    connection.connection.create_function(
        "vigil_audit_maintenance",
        0,
        lambda: 1 if getattr(connection, "vigil_audit_maintenance", False) else 0,
    )


def connect() -> None:
    connection_created.connect(_register_sqlite_function, dispatch_uid="audit-sqlite-function")


@contextmanager
def maintenance(connection) -> Iterator[None]:
    """Let this connection empty the audit tables. Only the test suite's flush uses it."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, 'on', false)", [AUDIT_MAINTENANCE])
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config(%s, 'off', false)", [AUDIT_MAINTENANCE])
    else:
        connection.vigil_audit_maintenance = True
        try:
            yield
        finally:
            connection.vigil_audit_maintenance = False
