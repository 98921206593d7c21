"""Append-only audit tables (SPEC §C2), on SQLite and PostgreSQL alike: history rows, signatures,
failed signing attempts, the drug register, the access log and the audit trail's own tables
refuse UPDATE and DELETE in the database, whatever ORM or SQL path asks; and the triggers that
do it are present on every such table (a migration that rebuilds a table on SQLite drops them).
"""

from __future__ import annotations

import re
from datetime import date

import pytest
from django.contrib import admin
from django.db import DatabaseError, connection, models, transaction
from django.urls import reverse

from audit.chain import chained_models
from audit.db import maintenance
from audit.models import AuditEvent, Finding, VerificationRun
from patients import services as patient_services
from patients.models import Patient
from tests.audit.conftest import (
    AUDIT_OWN_MODELS,
    PROTECTED_TABLES,
    altered_value,
    append_only_models,
    model_of_table,
    table_rows,
)
from tests.factories import UserFactory
from tests.patients.helpers import patient_form_data

pytestmark = pytest.mark.django_db

REFUSED = "append-only"

MODELS = {m._meta.label_lower: m for m in append_only_models()}


def refused(error: pytest.ExceptionInfo) -> bool:
    """The trigger's own refusal, not some other database error."""
    return REFUSED in str(error.value)


def first_row(model):
    return model._base_manager.order_by("pk").first()


def raw(sql: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def q(name: str) -> str:
    return connection.ops.quote_name(name)


# --- What is protected ---------------------------------------------------------------------------


def test_every_chained_model_and_the_audit_tables_are_in_the_protected_list():
    expected = {m._meta.db_table for m in append_only_models()}

    assert expected - set(PROTECTED_TABLES) == set()
    assert {AuditEvent._meta.db_table, VerificationRun._meta.db_table, Finding._meta.db_table} <= (
        expected
    )


def test_every_protected_table_is_the_table_of_an_installed_model():
    for table in PROTECTED_TABLES:
        assert model_of_table(table)._meta.db_table == table


def test_chained_models_include_every_history_model_and_the_evidence_tables():
    labels = {m._meta.label_lower for m in chained_models()}

    assert {
        "clinic.signature",
        "clinic.signaturefailure",
        "monitoring.controlledsubstanceentry",
        "audit.accesslog",
        "patients.historicalpatient",
        "clinic.historicaluser_sites",
    } <= labels


# --- The triggers are in the database ----------------------------------------------------------


# pg_trigger.tgtype bits
PG_ROW, PG_BEFORE, PG_DELETE, PG_UPDATE, PG_TRUNCATE = 1, 2, 8, 16, 32


def _pg_append_only_events() -> dict[str, set[str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, t.tgtype
              FROM pg_trigger t
              JOIN pg_class c ON c.oid = t.tgrelid
              JOIN pg_proc p ON p.oid = t.tgfoid
             WHERE p.proname = 'vigil_audit_append_only'
               AND NOT t.tgisinternal
               AND t.tgenabled <> 'D'
            """
        )
        events: dict[str, set[str]] = {}
        for table, tgtype in cursor.fetchall():
            if not tgtype & PG_BEFORE:
                continue
            found = events.setdefault(table, set())
            if tgtype & PG_ROW and tgtype & PG_UPDATE:
                found.add("UPDATE")
            if tgtype & PG_ROW and tgtype & PG_DELETE:
                found.add("DELETE")
            if not tgtype & PG_ROW and tgtype & PG_TRUNCATE:
                found.add("TRUNCATE")
        return events


def _sqlite_append_only_events() -> dict[str, set[str]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tbl_name, sql FROM sqlite_master WHERE type = 'trigger'")
        events: dict[str, set[str]] = {}
        for table, sql in cursor.fetchall():
            sql = " ".join(sql.split())
            if "RAISE(ABORT" not in sql or REFUSED not in sql:
                continue
            found = events.setdefault(table, set())
            name = re.escape(table)
            if re.search(rf"BEFORE UPDATE ON \"?{name}\"? ", sql):
                found.add("UPDATE")
            # The DELETE trigger yields only to the maintenance switch of the test flush.
            if re.search(
                rf"BEFORE DELETE ON \"?{name}\"? WHEN vigil_audit_maintenance\(\) IS NOT 1 ", sql
            ):
                found.add("DELETE")
        return events


def test_every_append_only_table_has_its_triggers_in_the_database():
    if connection.vendor == "postgresql":
        events, wanted = _pg_append_only_events(), {"UPDATE", "DELETE", "TRUNCATE"}
    else:
        events, wanted = _sqlite_append_only_events(), {"UPDATE", "DELETE"}
    tables = sorted({*PROTECTED_TABLES, *(m._meta.db_table for m in append_only_models())})

    missing = {t: sorted(wanted - events.get(t, set())) for t in tables}

    assert {t: m for t, m in missing.items() if m} == {}


# --- Raw SQL -------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", PROTECTED_TABLES)
def test_a_raw_sql_update_is_refused_by_the_database(audited_clinic, table):
    pk = q(model_of_table(table)._meta.pk.column)
    before = table_rows(table)
    assert before

    with pytest.raises(DatabaseError) as error, transaction.atomic():
        raw(f"UPDATE {q(table)} SET {pk} = {pk}")  # noqa: S608 - names from the models

    assert refused(error)
    assert table_rows(table) == before


@pytest.mark.parametrize("table", PROTECTED_TABLES)
def test_a_raw_sql_delete_is_refused_by_the_database(audited_clinic, table):
    before = table_rows(table)
    assert before

    with pytest.raises(DatabaseError) as error, transaction.atomic():
        raw(f"DELETE FROM {q(table)}")  # noqa: S608 - names from the models

    assert refused(error)
    assert table_rows(table) == before


# --- The ORM -------------------------------------------------------------------------------------


def _save_changed(model) -> None:
    row = first_row(model)
    name, value = altered_value(model, row)
    setattr(row, name, value)
    row.save()


def _delete_instance(model) -> None:
    # Model.delete itself: past NeverDeleted's Python refusal, to reach the trigger behind it.
    models.Model.delete(first_row(model))


def _update(manager_name: str):
    def update(model) -> None:
        row = first_row(model)
        name, value = altered_value(model, row)
        getattr(model, manager_name).filter(pk=row.pk).update(**{name: value})

    return update


def _delete(manager_name: str):
    def delete(model) -> None:
        getattr(model, manager_name).filter(pk=first_row(model).pk).delete()

    return delete


ORM_WRITES = {
    "instance-save": _save_changed,
    "instance-delete": _delete_instance,
    "default-manager-update": _update("_default_manager"),
    "default-manager-delete": _delete("_default_manager"),
    "base-manager-update": _update("_base_manager"),
    "base-manager-delete": _delete("_base_manager"),
}


@pytest.mark.parametrize("write", sorted(ORM_WRITES))
@pytest.mark.parametrize("label", sorted(MODELS))
def test_orm_writes_to_append_only_rows_are_refused_by_the_database(audited_clinic, label, write):
    model = MODELS[label]
    table = model._meta.db_table
    before = table_rows(table)

    with pytest.raises(DatabaseError) as error, transaction.atomic():
        ORM_WRITES[write](model)

    assert refused(error)
    assert table_rows(table) == before


def test_history_rows_cannot_be_rewritten_through_the_history_manager(audited_clinic):
    patient = audited_clinic.patient
    before = table_rows("patients_historicalpatient")

    with pytest.raises(DatabaseError) as error, transaction.atomic():
        patient.history.update(given_name="Someone else")

    assert refused(error)
    assert table_rows("patients_historicalpatient") == before


# --- The maintenance switch (the test flush) ---------------------------------------------------


def test_the_maintenance_switch_lets_the_owner_delete_audit_rows(audited_clinic):
    """What the test suite's flush relies on; the switch is off again afterwards."""
    event = AuditEvent.objects.order_by("pk").last()

    with transaction.atomic():
        with maintenance(connection):
            AuditEvent._base_manager.filter(pk=event.pk).delete()
        assert not AuditEvent.objects.filter(pk=event.pk).exists()

        with pytest.raises(DatabaseError) as error, transaction.atomic():
            AuditEvent._base_manager.order_by("pk").first().delete()
        assert refused(error)
        transaction.set_rollback(True)

    assert AuditEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.parametrize("model", AUDIT_OWN_MODELS, ids=lambda m: m._meta.label_lower)
def test_the_maintenance_switch_never_allows_an_update(audited_clinic, model):
    row = first_row(model)
    name, value = altered_value(model, row)
    before = table_rows(model._meta.db_table)

    with maintenance(connection), pytest.raises(DatabaseError) as error, transaction.atomic():
        model._base_manager.filter(pk=row.pk).update(**{name: value})

    assert refused(error)
    assert table_rows(model._meta.db_table) == before


# --- The admin -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [m for m in append_only_models() if m in admin.site._registry],
    ids=lambda m: m._meta.label_lower,
)
def test_the_admin_offers_no_change_or_deletion_of_append_only_rows(rf, site, model):
    request = rf.get("/admin/")
    request.user = UserFactory(username="root", is_superuser=True, is_staff=True, sites=[site])
    model_admin = admin.site._registry[model]

    assert model_admin.has_add_permission(request) is False
    assert model_admin.has_change_permission(request) is False
    assert model_admin.has_delete_permission(request) is False


def test_the_admins_history_pages_change_no_clinical_record(client, site, nurse, administrator):
    patient = patient_services.patient_register(
        site=site,
        acting_user=nurse,
        mrn="ADM-0001",
        given_name="Ann",
        family_name="Lee",
        date_of_birth=date(1980, 1, 1),
        sex=Patient.Sex.FEMALE,
    )
    patient_services.patient_update(patient=patient, acting_user=nurse, given_name="Anne")
    registered = patient.history.get(history_type="+")
    before = (table_rows(Patient._meta.db_table), patient.history.count())
    client.force_login(administrator)
    url = reverse("admin:patients_patient_simple_history", args=[patient.pk, registered.pk])

    response = client.post(
        url,
        {
            **patient_form_data(mrn="ADM-0001", given_name="Overwritten"),
            "home_site": site.pk,
            "created_by": nurse.pk,
        },
    )

    assert response.status_code == 403
    assert (table_rows(Patient._meta.db_table), patient.history.count()) == before
