"""Tampering with the audit trail on PostgreSQL (SPEC §C2, §C4).

The role the application connects as (NOSUPERUSER, owning nothing, the grants of
docker/postgres/10-app-role.sh) cannot UPDATE, DELETE or TRUNCATE any protected table, nor
switch the triggers off; the owner cannot either without the maintenance switch. Whoever gets
past the triggers anyway (the owner disabling them) leaves a trail that `verify_audit` reports,
naming the first broken link.

PostgreSQL only: roles, TRUNCATE and disabling triggers have no SQLite counterpart. CI runs on
PostgreSQL, so these run there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from audit.models import AccessLog, AuditChain, AuditEvent, VerificationRun
from clinic.db import AUDIT_MAINTENANCE
from clinic.models import Signature
from monitoring.models import ControlledSubstanceEntry
from patients.models import Patient
from protocols.models import Assessment
from tests.audit.conftest import PROTECTED_TABLES, model_of_table, table_rows

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"),
        reason="PostgreSQL roles and triggers",
    ),
]

HistoricalPatient = Patient.history.model


def q(name: str) -> str:
    return connection.ops.quote_name(name)


def raw(sql: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def settle_deferred_checks() -> None:
    """Run the foreign-key checks Django defers to commit. PostgreSQL refuses ALTER TABLE and
    TRUNCATE on a table with checks pending, and this module's transaction is long."""
    connection.check_constraints()


# --- The application's database role -----------------------------------------------------------


@pytest.fixture(scope="module")
def app_role(audited_clinic, django_db_blocker) -> str:
    """A role shaped like production's application role, created inside the module's
    transaction (so it disappears with it). Roles are cluster-wide: the name carries the test
    database's, which differs per xdist worker, and a leftover role of that name is reused."""
    name = f"{connection.settings_dict['NAME']}_app"[:63]
    role = q(name)
    with django_db_blocker.unblock():
        raw(
            "DO $$ BEGIN "
            f"CREATE ROLE {role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        raw(f"GRANT USAGE ON SCHEMA public TO {role}")
        raw(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        raw(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    return name


@contextmanager
def as_role(role: str, *, maintenance_switch: bool = False) -> Iterator[None]:
    """Run as `role` in a savepoint: rolling it back (on the expected error) restores us."""
    with transaction.atomic():
        raw(f"SET LOCAL ROLE {q(role)}")
        if maintenance_switch:
            raw("SELECT set_config(%s, 'on', true)", [AUDIT_MAINTENANCE])
        yield
        raw("RESET ROLE")


def update_sql(table: str) -> str:
    pk = q(model_of_table(table)._meta.pk.column)
    return f"UPDATE {q(table)} SET {pk} = {pk}"  # noqa: S608 - names from the models


def test_the_app_role_is_an_ordinary_role(app_role):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rolsuper, rolcreaterole, rolbypassrls FROM pg_roles WHERE rolname = %s",
            [app_role],
        )
        assert cursor.fetchone() == (False, False, False)
        cursor.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = %s",
            [app_role],
        )
        assert cursor.fetchone() == (0,)


@pytest.mark.parametrize("table", PROTECTED_TABLES)
def test_the_app_role_cannot_update_delete_or_truncate_a_protected_table(app_role, table):
    before = table_rows(table)
    assert before

    for statement in (update_sql(table), f"DELETE FROM {q(table)}"):  # noqa: S608
        with pytest.raises(DatabaseError) as error, as_role(app_role):
            raw(statement)
        assert f"{table} is append-only" in str(error.value), statement
    # The role has no TRUNCATE privilege at all; the trigger stands behind that.
    settle_deferred_checks()
    with pytest.raises(DatabaseError) as error, as_role(app_role):
        raw(f"TRUNCATE {q(table)} CASCADE")
    assert "permission denied" in str(error.value)

    assert table_rows(table) == before


@pytest.mark.parametrize("table", PROTECTED_TABLES)
def test_the_maintenance_switch_does_nothing_for_the_app_role(app_role, table):
    before = table_rows(table)

    with pytest.raises(DatabaseError) as error, as_role(app_role, maintenance_switch=True):
        raw(f"DELETE FROM {q(table)}")  # noqa: S608
    # (the signature and register tables' older trigger refuses first, switch or not)
    assert f"{table} is append-only" in str(error.value)
    settle_deferred_checks()
    with pytest.raises(DatabaseError) as error, as_role(app_role, maintenance_switch=True):
        raw(f"TRUNCATE {q(table)} CASCADE")
    assert "permission denied" in str(error.value)

    assert table_rows(table) == before


@pytest.mark.parametrize("table", PROTECTED_TABLES)
def test_the_owner_cannot_update_delete_or_truncate_without_the_maintenance_switch(
    audited_clinic, table
):
    before = table_rows(table)
    assert before
    settle_deferred_checks()

    for statement, operation in (
        (update_sql(table), "UPDATE"),
        (f"DELETE FROM {q(table)}", "DELETE"),  # noqa: S608
        (f"TRUNCATE {q(table)} CASCADE", "TRUNCATE"),
    ):
        with pytest.raises(DatabaseError) as error, transaction.atomic():
            raw(statement)
        assert f"{table} is append-only" in str(error.value), operation
        if operation == "TRUNCATE":
            assert "(TRUNCATE refused)" in str(error.value)

    assert table_rows(table) == before


APP_ROLE_ESCAPES = {
    "disable-triggers": "ALTER TABLE patients_historicalpatient DISABLE TRIGGER USER",
    "drop-trigger": (
        "DROP TRIGGER patients_historicalpatient_audit_row ON patients_historicalpatient"
    ),
    "replica-session": "SET LOCAL session_replication_role = replica",
    "drop-function": "DROP FUNCTION vigil_audit_append_only() CASCADE",
}


@pytest.mark.parametrize("escape", sorted(APP_ROLE_ESCAPES))
def test_the_app_role_cannot_switch_the_triggers_off(app_role, escape):
    with pytest.raises(DatabaseError) as error, as_role(app_role):
        raw(APP_ROLE_ESCAPES[escape])

    assert re.search(r"must be owner|permission denied", str(error.value))


# --- verify_audit against a tampered trail --------------------------------------------------------


@contextmanager
def triggers_off(*tables: str, how: str = "alter-table") -> Iterator[None]:
    """Tamper as the tables' owner (or a superuser) who switches the triggers off first."""
    settle_deferred_checks()
    if how == "replica-session":
        raw("SET LOCAL session_replication_role = replica")
    else:
        for table in tables:
            raw(f"ALTER TABLE {q(table)} DISABLE TRIGGER USER")
    yield
    settle_deferred_checks()  # the tampering's own
    if how == "replica-session":
        raw("SET LOCAL session_replication_role = origin")
    else:
        for table in tables:
            raw(f"ALTER TABLE {q(table)} ENABLE TRIGGER USER")


def verify() -> tuple[int, str]:
    """verify_audit's exit status and output."""
    out = StringIO()
    try:
        call_command("verify_audit", stdout=out, stderr=StringIO())
    except CommandError as error:
        return error.returncode, out.getvalue()
    return 0, out.getvalue()


def link_of(row) -> AuditEvent:
    return AuditEvent.objects.select_related("chain").get(
        source=row._meta.label_lower, source_id=row.pk
    )


def first_broken_link(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("First broken link: ")]
    return line.removeprefix("First broken link: ")


def where(event: AuditEvent) -> str:
    return f"chain {event.chain.key} link {event.seq} ({event.source} #{event.source_id})"


def history_of(patient: Patient, history_type: str):
    return patient.history.get(history_type=history_type)


def test_an_untouched_trail_verifies_clean(audited_clinic):
    code, out = verify()

    assert code == 0
    assert "Audit trail intact" in out
    assert "First broken link" not in out
    assert VerificationRun.objects.latest("id").ok is True


@pytest.mark.parametrize("how", ["alter-table", "replica-session"])
def test_a_history_row_altered_behind_the_triggers_is_the_first_broken_link(audited_clinic, how):
    row = history_of(audited_clinic.patient, "~")
    with triggers_off(HistoricalPatient._meta.db_table, how=how):
        raw(
            "UPDATE patients_historicalpatient SET given_name = %s WHERE history_id = %s",
            ["Someone else", row.pk],
        )

    code, out = verify()

    assert code == 1
    assert first_broken_link(out) == (
        f"Row altered: {where(link_of(row))}: the row no longer matches what was stored"
    )


def test_a_deleted_history_row_is_reported_missing(audited_clinic):
    row = history_of(audited_clinic.patient, "~")
    event = link_of(row)
    with triggers_off(HistoricalPatient._meta.db_table):
        raw("DELETE FROM patients_historicalpatient WHERE history_id = %s", [row.pk])

    code, out = verify()

    assert code == 1
    assert (
        first_broken_link(out) == f"Row missing: {where(event)}: the row this link covers is gone"
    )


def test_two_history_rows_with_swapped_content_break_the_earlier_link(audited_clinic):
    created, edited = (
        history_of(audited_clinic.patient, "+"),
        history_of(audited_clinic.patient, "~"),
    )
    spare = HistoricalPatient.objects.order_by("-history_id").first().pk + 1000
    with triggers_off(HistoricalPatient._meta.db_table):
        for old, new in ((created.pk, spare), (edited.pk, created.pk), (spare, edited.pk)):
            raw(
                "UPDATE patients_historicalpatient SET history_id = %s WHERE history_id = %s",
                [new, old],
            )

    code, out = verify()

    assert code == 1
    earlier = min(link_of(created), link_of(edited), key=lambda e: e.seq)
    assert first_broken_link(out).startswith(f"Row altered: {where(earlier)}")


def chain_of(patient: Patient) -> AuditChain:
    return link_of(history_of(patient, "~")).chain


def test_two_links_with_swapped_places_break_the_chain_at_the_first(audited_clinic):
    chain = chain_of(audited_clinic.patient)
    first, second = (
        AuditEvent.objects.get(chain=chain, seq=chain.length // 3),
        AuditEvent.objects.get(chain=chain, seq=2 * chain.length // 3),
    )
    with triggers_off("audit_auditevent"):
        for pk, seq in ((first.pk, 10**12), (second.pk, first.seq), (first.pk, second.seq)):
            raw("UPDATE audit_auditevent SET seq = %s WHERE id = %s", [seq, pk])

    code, out = verify()

    assert code == 1
    moved = AuditEvent.objects.select_related("chain").get(pk=second.pk)
    assert first_broken_link(out) == (
        f"Broken chain link: {where(moved)}: does not follow its predecessor (moved or replaced)"
    )
    assert moved.seq == first.seq


ALTERED_LINKS = {
    "reason": ("reason", "Edited: nothing"),
    "user": ("user_id", None),
    "time": ("occurred_at", "2020-01-01T00:00:00Z"),
    "hash": ("hash", "0" * 64),
}


@pytest.mark.parametrize("alteration", sorted(ALTERED_LINKS))
def test_an_altered_link_is_the_first_broken_link(audited_clinic, alteration):
    event = link_of(history_of(audited_clinic.patient, "~"))
    column, value = ALTERED_LINKS[alteration]
    with triggers_off("audit_auditevent"):
        raw(f"UPDATE audit_auditevent SET {column} = %s WHERE id = %s", [value, event.pk])  # noqa: S608

    code, out = verify()

    assert code == 1
    assert (
        first_broken_link(out) == f"Broken chain link: {where(event)}: the link itself was altered"
    )


def test_a_link_deleted_from_the_middle_of_the_chain_is_reported_at_its_successor(audited_clinic):
    chain = chain_of(audited_clinic.patient)
    gone = AuditEvent.objects.get(chain=chain, seq=chain.length // 2)
    successor = AuditEvent.objects.select_related("chain").get(chain=chain, seq=gone.seq + 1)
    with triggers_off("audit_auditevent"):
        raw("DELETE FROM audit_auditevent WHERE id = %s", [gone.pk])

    code, out = verify()

    assert code == 1
    assert first_broken_link(out) == (
        f"Broken chain link: {where(successor)}: link {gone.seq} is missing"
    )
    # The row the deleted link covered is now outside every chain.
    assert (
        f"Row outside any chain: outside chains ({gone.source} #{gone.source_id}): "
        "no link covers this row"
    ) in out


def test_a_truncated_tail_is_caught_by_the_chain_head(audited_clinic):
    chain = chain_of(audited_clinic.patient)
    last = AuditEvent.objects.get(chain=chain, seq=chain.length)
    with triggers_off("audit_auditevent"):
        raw("DELETE FROM audit_auditevent WHERE id = %s", [last.pk])

    code, out = verify()

    assert code == 1
    assert first_broken_link(out).startswith(
        f"Chain head does not match its last link: chain {chain.key} link {chain.length}: "
        f"the head says {chain.length} links ending {chain.head[:12]}…, "
        f"the chain has {chain.length - 1} ending "
    )


def _copy_row_sql(model) -> str:
    columns = ", ".join(q(f.column) for f in model._meta.concrete_fields if not f.primary_key)
    table, pk = q(model._meta.db_table), q(model._meta.pk.column)
    return (
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} "  # noqa: S608
        f"WHERE {pk} = %s RETURNING {pk}"
    )


def test_a_history_row_inserted_behind_the_apps_back_is_reported_unchained(audited_clinic):
    row = history_of(audited_clinic.patient, "~")
    with connection.cursor() as cursor:
        cursor.execute(_copy_row_sql(HistoricalPatient), [row.pk])
        (inserted,) = cursor.fetchone()

    code, out = verify()

    assert code == 1
    assert first_broken_link(out) == (
        f"Row outside any chain: outside chains (patients.historicalpatient #{inserted}): "
        "no link covers this row"
    )


def test_a_forged_link_past_the_head_does_not_hide_an_inserted_row(audited_clinic):
    row = history_of(audited_clinic.patient, "~")
    event = link_of(row)
    chain = event.chain
    with connection.cursor() as cursor:
        cursor.execute(_copy_row_sql(HistoricalPatient), [row.pk])
        (inserted,) = cursor.fetchone()
        # Appending is what append-only tables allow: no trigger needs to be switched off.
        cursor.execute(
            "INSERT INTO audit_auditevent (chain_id, seq, occurred_at, action, source, source_id, "
            "object_type, object_id, user_id, site_id, patient_id, reason, content_sha256, "
            "prev_hash, hash) SELECT chain_id, %s, occurred_at, action, source, %s, object_type, "
            "object_id, user_id, site_id, patient_id, reason, %s, %s, %s "
            "FROM audit_auditevent WHERE id = %s",
            [chain.length + 1000, inserted, "0" * 64, "0" * 64, "0" * 64, event.pk],
        )

    code, out = verify()

    assert code == 1
    assert first_broken_link(out) == (
        f"Broken chain link: chain {chain.key} link {chain.length + 1000} "
        f"(patients.historicalpatient #{inserted}): "
        "a link past the chain's head (forged or inserted behind the application)"
    )


def test_a_signed_record_altered_behind_the_triggers_is_reported_signature_invalid(audited_clinic):
    assessment = audited_clinic.assessment
    with triggers_off(Assessment._meta.db_table):
        raw(
            "UPDATE protocols_assessment SET diagnosis = %s WHERE id = %s",
            ["Nothing to see here", assessment.pk],
        )

    code, out = verify()

    assert code == 1
    signature = Signature.objects.get(
        content_type=ContentType.objects.get_for_model(Assessment), object_id=assessment.pk
    )
    assert first_broken_link(out) == (
        f"Signature invalid: outside chains (clinic.signature #{signature.pk}): "
        f"Approved signature by {signature.printed_name} on {Assessment._meta.verbose_name} "
        f"#{assessment.pk} "
        "no longer matches the record"
    )


def test_a_rewritten_signature_breaks_its_link_and_fails_verification(audited_clinic):
    assessment = audited_clinic.assessment
    signature = Signature.objects.get(
        content_type=ContentType.objects.get_for_model(Assessment), object_id=assessment.pk
    )
    with triggers_off(Signature._meta.db_table):
        raw(
            "UPDATE clinic_signature SET printed_name = %s WHERE id = %s",
            ["Someone Else", signature.pk],
        )

    code, out = verify()

    assert code == 1
    assert first_broken_link(out).startswith(f"Row altered: {where(link_of(signature))}")
    assert f"Signature invalid: outside chains (clinic.signature #{signature.pk})" in out


@pytest.mark.parametrize(
    ("model", "column", "value"),
    [
        (ControlledSubstanceEntry, "amount_mg", "1.00"),
        (AccessLog, "ip_address", "10.9.9.9"),
    ],
    ids=["register-amount", "access-address"],
)
def test_altered_evidence_rows_are_reported(audited_clinic, model, column, value):
    row = model._base_manager.order_by("pk").first()
    with triggers_off(model._meta.db_table):
        raw(f"UPDATE {q(model._meta.db_table)} SET {q(column)} = %s WHERE id = %s", [value, row.pk])  # noqa: S608

    code, out = verify()

    assert code == 1
    assert first_broken_link(out).startswith(f"Row altered: {where(link_of(row))}")
