"""Database-level guards installed by migrations: the last line behind services and the ORM.

PostgreSQL and SQLite both get a trigger that refuses UPDATE of a locked (signed) row
(SPEC §S3). PostgreSQL also refuses row DELETE on those tables and any UPDATE or DELETE on
append-only tables (signatures). SQLite relies on the ORM for DELETE so that the test
database can still be flushed; the embedded SQLite default is not the production shape.
"""

from __future__ import annotations

from django.db import migrations

_PG_FUNCTIONS = """
CREATE OR REPLACE FUNCTION vigil_refuse_locked() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'vigil: rows of % are never deleted', TG_TABLE_NAME;
  END IF;
  IF OLD.locked_at IS NOT NULL THEN
    RAISE EXCEPTION 'vigil: row % of % is signed and locked', OLD.id, TG_TABLE_NAME;
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION vigil_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'vigil: % is append-only', TG_TABLE_NAME;
END $$ LANGUAGE plpgsql;
"""


def _install(sql_by_vendor: dict[str, list[str]]):
    def forwards(apps, schema_editor):
        for statement in sql_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement, params=None)  # no params: keep plpgsql % as is

    return forwards


def refuse_locked_changes(*tables: str) -> migrations.RunPython:
    postgresql = [_PG_FUNCTIONS]
    sqlite = []
    for table in tables:
        postgresql.append(
            f"CREATE TRIGGER {table}_locked BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION vigil_refuse_locked();"
        )
        sqlite.append(
            f"CREATE TRIGGER {table}_locked BEFORE UPDATE ON {table} "
            f"WHEN OLD.locked_at IS NOT NULL "
            f"BEGIN SELECT RAISE(ABORT, 'vigil: row of {table} is signed and locked'); END;"
        )
    return migrations.RunPython(
        _install({"postgresql": postgresql, "sqlite": sqlite}), migrations.RunPython.noop
    )


def append_only(*tables: str) -> migrations.RunPython:
    postgresql = [_PG_FUNCTIONS]
    sqlite = []
    for table in tables:
        postgresql.append(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION vigil_append_only();"
        )
        sqlite.append(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'vigil: {table} is append-only'); END;"
        )
    return migrations.RunPython(
        _install({"postgresql": postgresql, "sqlite": sqlite}), migrations.RunPython.noop
    )
