"""The controlled-substance register (SPEC §M12) and its CSV export (§C5).

Receipts and administrations keep a running balance per lot; a waste needs a different person as
witness who re-enters their password; a balance below zero opens an incident; the export
neutralizes cells a spreadsheet would run as formulas; lines are append-only.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from clinic.models import Role
from monitoring import services
from monitoring.models import ControlledSubstanceEntry, DrugLot, Incident
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

Kind = ControlledSubstanceEntry.Kind


def lines(lot: DrugLot) -> list[tuple[str, Decimal, Decimal]]:
    return list(
        ControlledSubstanceEntry.objects.filter(lot=lot)
        .order_by("id")
        .values_list("kind", "amount_mg", "balance_mg")
    )


def waste(lot, by, witness, password, amount="5", reason="Drawn up, not given"):
    return services.waste_record(
        lot=lot,
        acting_user=by,
        amount_mg=Decimal(amount),
        reason=reason,
        witness=witness,
        witness_password=password,
    )


# --- Running balance ---------------------------------------------------------------------------


def test_a_receipt_opens_the_lot_with_its_balance(ketamine_lot, nurse):
    (line,) = ControlledSubstanceEntry.objects.filter(lot=ketamine_lot)

    assert (line.kind, line.amount_mg, line.balance_mg) == (
        Kind.RECEIPT,
        ketamine_lot.received_mg,
        ketamine_lot.received_mg,
    )
    assert line.by == nurse


def test_an_administration_lowers_the_balance_with_who_gave_it_and_the_prescriber(
    dosing, ketamine_lot, nurse, psychiatrist, patient
):
    dose = dosing.doses.get()

    receipt, given = ControlledSubstanceEntry.objects.filter(lot=ketamine_lot).order_by("id")

    assert given.kind == Kind.ADMINISTRATION
    assert given.amount_mg == dose.dose_mg
    assert given.volume_ml == dose.volume_ml
    assert given.balance_mg == receipt.balance_mg - dose.dose_mg
    assert (given.by, given.prescriber, given.patient) == (nurse, psychiatrist, patient)
    assert given.session_id == dosing.pk
    assert given.at == dose.started_at


def test_receipt_administration_and_waste_keep_a_running_balance(
    dosing, ketamine_lot, nurse, psychiatrist, password
):
    dose = dosing.doses.get()

    waste(ketamine_lot, nurse, psychiatrist, password, amount="2.5")

    received = ketamine_lot.received_mg
    assert lines(ketamine_lot) == [
        (Kind.RECEIPT, received, received),
        (Kind.ADMINISTRATION, dose.dose_mg, received - dose.dose_mg),
        (Kind.WASTE, Decimal("2.5"), received - dose.dose_mg - Decimal("2.5")),
    ]
    assert not Incident.objects.exists()


def test_each_lot_keeps_its_own_balance(ketamine_lot, site, nurse, psychiatrist, password):
    other = services.lot_receive(
        site=site,
        acting_user=nurse,
        drug="ketamine",
        lot_number="KET-TEST-2",
        concentration_mg_per_ml=Decimal("50"),
        expires_on=timezone.localdate() + timedelta(days=200),
        received_mg=Decimal("200"),
    )

    waste(other, nurse, psychiatrist, password, amount="20")

    assert lines(ketamine_lot)[-1][2] == ketamine_lot.received_mg
    assert lines(other)[-1][2] == Decimal("180")


# --- Waste: a different witness who re-enters their password ------------------------------------


def test_a_witnessed_waste_records_both_people(ketamine_lot, nurse, psychiatrist, password):
    line = waste(ketamine_lot, nurse, psychiatrist, password, reason="  Syringe dropped  ")

    assert (line.kind, line.by, line.witness) == (Kind.WASTE, nurse, psychiatrist)
    assert line.reason == "Syringe dropped"


def test_a_waste_witnessed_by_the_person_wasting_is_refused(ketamine_lot, nurse, password):
    before = lines(ketamine_lot)

    with pytest.raises(ValidationError) as caught:
        waste(ketamine_lot, nurse, nurse, password)

    assert caught.value.message_dict == {"witness": [services.WITNESS_SAME_PERSON]}
    assert lines(ketamine_lot) == before


@pytest.mark.parametrize("witness_password", ["", "wrong-password"])
def test_a_waste_with_a_wrong_witness_password_is_refused(
    ketamine_lot, nurse, psychiatrist, witness_password
):
    before = lines(ketamine_lot)

    with pytest.raises(ValidationError) as caught:
        waste(ketamine_lot, nurse, psychiatrist, witness_password)

    assert caught.value.message_dict == {"witness_password": [services.WRONG_WITNESS_PASSWORD]}
    assert lines(ketamine_lot) == before


def test_an_inactive_witness_cannot_witness(ketamine_lot, nurse, psychiatrist, password):
    psychiatrist.is_active = False
    psychiatrist.save(update_fields=["is_active"])
    before = lines(ketamine_lot)

    with pytest.raises(ValidationError):
        waste(ketamine_lot, nurse, psychiatrist, password)

    assert lines(ketamine_lot) == before


def test_a_witness_from_another_site_is_refused(ketamine_lot, nurse, outsider, password):
    before = lines(ketamine_lot)

    with pytest.raises(ValidationError) as caught:
        waste(ketamine_lot, nurse, outsider, password)

    assert "witness" in caught.value.message_dict
    assert lines(ketamine_lot) == before


@pytest.mark.parametrize(("amount", "reason"), [("0", "Spilt"), ("-1", "Spilt"), ("5", "  ")])
def test_a_waste_needs_a_positive_amount_and_a_reason(
    ketamine_lot, nurse, psychiatrist, password, amount, reason
):
    before = lines(ketamine_lot)

    with pytest.raises(ValidationError):
        waste(ketamine_lot, nurse, psychiatrist, password, amount=amount, reason=reason)

    assert lines(ketamine_lot) == before


def test_the_database_refuses_a_waste_without_a_distinct_witness(ketamine_lot, nurse):
    with pytest.raises(DatabaseError), transaction.atomic():
        ControlledSubstanceEntry.objects.create(
            lot=ketamine_lot,
            kind=Kind.WASTE,
            at=timezone.now(),
            amount_mg=Decimal("1"),
            balance_mg=Decimal("999"),
            by=nurse,
            witness=nurse,
            reason="Bypassing the service",
        )


def test_the_waste_form_refuses_the_wrong_witness_password(
    client, ketamine_lot, nurse, psychiatrist
):
    client.force_login(nurse)
    before = lines(ketamine_lot)

    response = client.post(
        reverse("monitoring:waste_new", args=[ketamine_lot.pk]),
        {
            "amount_mg": "5",
            "reason": "Drawn up, not given",
            "witness": psychiatrist.pk,
            "witness_password": "wrong-password",
        },
    )

    assert response.status_code == 200
    assert escape(services.WRONG_WITNESS_PASSWORD) in response.content.decode()
    assert lines(ketamine_lot) == before


# --- A discrepancy opens an incident -----------------------------------------------------------


def test_a_waste_taking_the_balance_below_zero_opens_an_incident(
    ketamine_lot, nurse, psychiatrist, password
):
    excess = ketamine_lot.received_mg + Decimal("1")

    line = waste(ketamine_lot, nurse, psychiatrist, password, amount=str(excess))

    assert line.balance_mg == Decimal("-1")
    (incident,) = Incident.objects.all()
    assert incident.kind == Incident.Kind.CS_DISCREPANCY
    assert (incident.site, incident.lot, incident.opened_by) == (
        ketamine_lot.site,
        ketamine_lot,
        nurse,
    )
    assert str(line.pk) in incident.description


def test_a_waste_emptying_the_lot_exactly_opens_no_incident(
    ketamine_lot, nurse, psychiatrist, password
):
    line = waste(ketamine_lot, nurse, psychiatrist, password, amount=str(ketamine_lot.received_mg))

    assert line.balance_mg == 0
    assert not Incident.objects.exists()


# --- CSV export ----------------------------------------------------------------------------------

FORMULA_STARTS = ["=", "+", "-", "@", "\t"]


def export(client, user) -> list[list[str]]:
    client.force_login(user)
    response = client.get(reverse("monitoring:register_csv"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


@pytest.fixture
def dangerous_reasons(ketamine_lot, nurse, psychiatrist, password) -> dict[str, str]:
    """Register lines whose free text starts like a formula, one per dangerous first character."""
    reasons = {}
    for start in FORMULA_STARTS:
        reason = f'{start}HYPERLINK("http://evil.invalid","x")'
        if start == "\t":
            # The waste service strips leading whitespace; a tab can still arrive in a line
            # written another way (an import), and the export must not trust the data.
            ControlledSubstanceEntry.objects.create(
                lot=ketamine_lot,
                kind=Kind.WASTE,
                at=timezone.now(),
                amount_mg=Decimal("1"),
                balance_mg=lines(ketamine_lot)[-1][2] - 1,
                by=nurse,
                witness=psychiatrist,
                reason=reason,
            )
        else:
            waste(ketamine_lot, nurse, psychiatrist, password, amount="1", reason=reason)
        reasons[start] = reason
    return reasons


def test_the_csv_export_neutralizes_cells_that_start_like_formulas(
    client, administrator, dangerous_reasons
):
    rows = export(client, administrator)

    header, data = rows[0], rows[1:]
    reason_at = header.index("reason")
    exported = [row[reason_at] for row in data]
    for reason in dangerous_reasons.values():
        assert "'" + reason in exported
        assert reason not in exported


def test_no_exported_cell_starts_like_a_formula(client, administrator, dangerous_reasons, dosing):
    rows = export(client, administrator)

    assert len(rows) > len(FORMULA_STARTS)
    for row in rows:
        for cell in row:
            assert not cell.startswith(tuple(FORMULA_STARTS)), cell


def test_the_csv_export_lists_every_line_of_the_users_sites(
    client, administrator, dosing, ketamine_lot, other_site, outsider
):
    services.lot_receive(
        site=other_site,
        acting_user=outsider,
        drug="ketamine",
        lot_number="KET-HARBOUR",
        concentration_mg_per_ml=Decimal("10"),
        expires_on=timezone.localdate() + timedelta(days=100),
        received_mg=Decimal("500"),
    )

    rows = export(client, administrator)

    header, data = rows[0], rows[1:]
    lot_at = header.index("lot")
    assert [row[lot_at] for row in data] == [ketamine_lot.lot_number] * len(lines(ketamine_lot))
    assert dosing.patient.mrn in {row[header.index("patient record number")] for row in data}


@pytest.mark.parametrize("role", ["nurse", "psychiatrist", "anesthesiologist", "gp"])
def test_clinicians_cannot_export_the_register(request, client, ketamine_lot, role):
    client.force_login(request.getfixturevalue(role))

    response = client.get(reverse("monitoring:register_csv"))

    assert response.status_code == 403


def test_an_anonymous_export_is_redirected_to_login(client, ketamine_lot):
    response = client.get(reverse("monitoring:register_csv"))

    assert response.status_code == 302
    assert reverse("login") in response["Location"]


# --- Append-only ---------------------------------------------------------------------------------

TABLE = ControlledSubstanceEntry._meta.db_table


def test_register_lines_cannot_be_updated_with_raw_sql(ketamine_lot):
    before = lines(ketamine_lot)

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET amount_mg = %s WHERE lot_id = %s",  # noqa: S608
            [Decimal("1"), ketamine_lot.pk],
        )

    assert lines(ketamine_lot) == before


def test_register_lines_cannot_be_updated_through_the_orm(ketamine_lot):
    before = lines(ketamine_lot)

    with pytest.raises(DatabaseError), transaction.atomic():
        ControlledSubstanceEntry.objects.filter(lot=ketamine_lot).update(balance_mg=Decimal("0"))
    line = ControlledSubstanceEntry.objects.get(lot=ketamine_lot)
    line.reason = "Edited"
    with pytest.raises(DatabaseError), transaction.atomic():
        line.save()

    assert lines(ketamine_lot) == before


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite keeps DELETE for flushing test databases"
)
def test_register_lines_cannot_be_deleted_on_postgresql(ketamine_lot):
    before = lines(ketamine_lot)

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE lot_id = %s", [ketamine_lot.pk])  # noqa: S608

    assert lines(ketamine_lot) == before


def test_a_waste_needs_the_add_permission_on_the_form(client, ketamine_lot, administrator):
    """Administrators read the register; they do not write clinical lines (§U)."""
    client.force_login(administrator)

    response = client.get(reverse("monitoring:waste_new", args=[ketamine_lot.pk]))

    assert response.status_code == 403


def test_a_gp_cannot_be_chosen_as_witness(client, ketamine_lot, nurse, site, password):
    gp = UserFactory(roles=[Role.GP], sites=[site])
    client.force_login(nurse)
    before = lines(ketamine_lot)

    response = client.post(
        reverse("monitoring:waste_new", args=[ketamine_lot.pk]),
        {
            "amount_mg": "5",
            "reason": "Drawn up, not given",
            "witness": gp.pk,
            "witness_password": password,
        },
    )

    assert response.status_code == 200
    assert lines(ketamine_lot) == before
