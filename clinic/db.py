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


_PG_CHILD_FUNCTION = """
CREATE OR REPLACE FUNCTION vigil_refuse_child_of_locked() RETURNS trigger AS $$
DECLARE parent_locked timestamptz;
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'vigil: rows of % are never deleted', TG_TABLE_NAME;
  END IF;
  EXECUTE format('SELECT locked_at FROM %I WHERE id = $1', TG_ARGV[0])
    INTO parent_locked USING NEW.session_id;
  IF parent_locked IS NOT NULL THEN
    RAISE EXCEPTION 'vigil: % belongs to a signed and locked record', TG_TABLE_NAME;
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
"""


def refuse_changes_to_children_of_locked(
    parent: str, *children: str, vendors: tuple[str, ...] = ("postgresql", "sqlite")
) -> migrations.RunPython:
    """Rows of `children` (with a `session_id` column) freeze when their parent is locked.

    SQLite drops a table's triggers when a migration rebuilds the table (AlterField): pass
    `vendors=("sqlite",)` in that migration to put them back.
    """
    postgresql = [_PG_CHILD_FUNCTION]
    sqlite = []
    for table in children:
        postgresql.append(
            f"CREATE TRIGGER {table}_parent_locked BEFORE INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION vigil_refuse_child_of_locked('{parent}');"
        )
        for event in ("INSERT", "UPDATE"):
            # Table names come from migrations, never from input.
            sqlite.append(
                f"CREATE TRIGGER {table}_parent_locked_{event.lower()} "
                f"BEFORE {event} ON {table} "
                f"WHEN (SELECT locked_at FROM {parent} WHERE id = NEW.session_id) IS NOT NULL "
                f"BEGIN SELECT RAISE(ABORT, 'vigil: {table} belongs to a locked record'); END;"
            )
    by_vendor = {"postgresql": postgresql, "sqlite": sqlite}
    return migrations.RunPython(
        _install({v: by_vendor[v] for v in vendors}), migrations.RunPython.noop
    )


_PG_ONCE_SET_FUNCTION = """
CREATE OR REPLACE FUNCTION vigil_refuse_once_set() RETURNS trigger AS $$
DECLARE
  i int;
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'vigil: rows of % are never deleted', TG_TABLE_NAME;
  END IF;
  IF to_jsonb(OLD) ->> TG_ARGV[0] IS NULL THEN
    RETURN NEW;
  END IF;
  -- A final row may be re-saved unchanged (fixture reloads serialize times to milliseconds).
  IF date_trunc('milliseconds', (to_jsonb(NEW) ->> TG_ARGV[0])::timestamptz)
     IS DISTINCT FROM date_trunc('milliseconds', (to_jsonb(OLD) ->> TG_ARGV[0])::timestamptz) THEN
    RAISE EXCEPTION 'vigil: row % of % is final (% is set)', OLD.id, TG_TABLE_NAME, TG_ARGV[0];
  END IF;
  FOR i IN 1 .. TG_NARGS - 1 LOOP
    IF (to_jsonb(NEW) -> TG_ARGV[i]) IS DISTINCT FROM (to_jsonb(OLD) -> TG_ARGV[i]) THEN
      RAISE EXCEPTION 'vigil: row % of % is final (% is set)', OLD.id, TG_TABLE_NAME, TG_ARGV[0];
    END IF;
  END LOOP;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
"""


def refuse_changes_once_set(
    table: str, column: str, watched: tuple[str, ...]
) -> migrations.RunPython:
    """Rows whose `column` (a time, e.g. published_at) is set are final: a change to it or to
    any `watched` column, and any DELETE, is refused. Re-saving the row unchanged passes."""
    arguments = ", ".join(f"'{c}'" for c in (column, *watched))
    postgresql = [
        _PG_ONCE_SET_FUNCTION,
        f"CREATE TRIGGER {table}_{column}_final BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION vigil_refuse_once_set({arguments});",
    ]
    changed = " OR ".join(
        [f"substr(NEW.{column}, 1, 23) IS NOT substr(OLD.{column}, 1, 23)"]
        + [f"NEW.{c} IS NOT OLD.{c}" for c in watched]
    )
    sqlite = [
        f"CREATE TRIGGER {table}_{column}_final BEFORE UPDATE ON {table} "
        f"WHEN OLD.{column} IS NOT NULL AND ({changed}) "
        f"BEGIN SELECT RAISE(ABORT, 'vigil: row of {table} is final'); END;"
    ]
    return migrations.RunPython(
        _install({"postgresql": postgresql, "sqlite": sqlite}), migrations.RunPython.noop
    )


# --- the audit trail (SPEC §C2) ----------------------------------------------------------------
#
# History, signatures, the access log and the audit tables refuse UPDATE, DELETE and TRUNCATE.
# The one way round is `audit.db.maintenance()`, which the test suite uses to empty its
# database between tests; production code never calls it, and `verify_audit` reports a chain
# that lost rows however they went.

AUDIT_MAINTENANCE = "vigil.audit_maintenance"

_PG_AUDIT_FUNCTION = f"""
CREATE OR REPLACE FUNCTION vigil_audit_append_only() RETURNS trigger AS $$
BEGIN
  -- The switch counts only for the tables' owner (or a superuser): the application's own
  -- role, which owns nothing in production, cannot use it.
  IF TG_OP IN ('DELETE', 'TRUNCATE')
     AND current_setting('{AUDIT_MAINTENANCE}', true) = 'on'
     AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER')
  THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'vigil: % is append-only (% refused)', TG_TABLE_NAME, TG_OP;
END $$ LANGUAGE plpgsql;
"""


def audit_append_only(*tables: str) -> migrations.RunPython:
    postgresql = [_PG_AUDIT_FUNCTION]
    sqlite = []
    for table in tables:
        postgresql += [
            f"CREATE TRIGGER {table}_audit_row BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION vigil_audit_append_only();",
            f"CREATE TRIGGER {table}_audit_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION vigil_audit_append_only();",
        ]
        sqlite += [
            f"CREATE TRIGGER {table}_audit_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'vigil: {table} is append-only (UPDATE refused)'); END;",
            # vigil_audit_maintenance() is registered on the app's connections; elsewhere
            # (the sqlite3 shell) it does not exist, and the DELETE fails all the same.
            f"CREATE TRIGGER {table}_audit_delete BEFORE DELETE ON {table} "
            f"WHEN vigil_audit_maintenance() IS NOT 1 "
            f"BEGIN SELECT RAISE(ABORT, 'vigil: {table} is append-only (DELETE refused)'); END;",
        ]
    return migrations.RunPython(
        _install({"postgresql": postgresql, "sqlite": sqlite}), migrations.RunPython.noop
    )


def preserve_sqlite_triggers(*tables: str) -> tuple[migrations.RunPython, migrations.RunPython]:
    """SQLite rebuilds a table to add most columns, which drops its triggers (the lock and
    append-only guards). Put the first operation before a migration's schema changes and the
    second after them: every trigger of `tables` that the rebuild dropped is created again,
    from its own stored SQL. PostgreSQL keeps triggers across ALTER TABLE: nothing to do."""
    saved: dict[str, str] = {}
    placeholders = ", ".join(["%s"] * len(tables))
    query = (
        "SELECT name, sql FROM sqlite_master "
        f"WHERE type = 'trigger' AND tbl_name IN ({placeholders})"
    )

    def save(apps, schema_editor):
        if schema_editor.connection.vendor != "sqlite":
            return
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(query, list(tables))
            saved.update(dict(cursor.fetchall()))

    def restore(apps, schema_editor):
        if schema_editor.connection.vendor != "sqlite":
            return
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(query, list(tables))
            present = {name for name, _ in cursor.fetchall()}
        for name, sql in saved.items():
            if name not in present:
                schema_editor.execute(sql, params=None)

    return (
        migrations.RunPython(save, migrations.RunPython.noop),
        migrations.RunPython(restore, migrations.RunPython.noop),
    )
