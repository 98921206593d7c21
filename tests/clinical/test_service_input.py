"""Input at the service layer (SPEC §N5, §M4, §P1, §A4, §M12): services validate like forms.

Sources: SPEC §M4 ("SpO2 50–100 (integer)"; plausibility limits reject with a field error),
§N5 ("Bad input always gets a clear field-level error ... nothing partial is saved"), §P1
("outside the protocol's weight limits — default 20–300 kg — it is refused with a clear
message"), §A4 ("Esketamine is not approved under 18: a course for a younger patient needs a
prescriber's override reason"; Spravato label: not approved in paediatric patients), §M12.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from clinic.services import attribute
from monitoring import services
from monitoring.models import ControlledSubstanceEntry, VitalReading
from patients import services as patient_services
from patients.models import Patient
from protocols import services as protocol_services
from protocols.models import Protocol, TreatmentCourse
from tests.clinical.conftest import NORMAL

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("field", ["sbp", "dbp", "hr", "rr", "spo2", "moaas"])
@pytest.mark.parametrize(
    "value",
    [Decimal("97.5"), 97.5, "97.5", "ninety", True],
    ids=["decimal", "float", "text", "word", "bool"],
)
def test_n5_a_non_integer_vital_is_refused_with_a_field_error_never_truncated(clinic, field, value):
    session = clinic.checked_in(clinic.course())
    values = {**NORMAL, "sbp": 150, "dbp": 60, field: value}
    with pytest.raises(ValidationError) as refused:
        clinic.vitals(session, **values)
    assert field in refused.value.message_dict
    assert not VitalReading.objects.filter(session=session).exists()


@pytest.mark.parametrize(
    "value", [98, Decimal("98"), 98.0, "98"], ids=["int", "decimal", "float", "text"]
)
def test_n5_a_whole_number_in_any_numeric_form_is_accepted(clinic, value):
    session = clinic.checked_in(clinic.course())
    reading = clinic.vitals(session, **{**NORMAL, "spo2": value})
    assert reading.spo2 == 98


@pytest.mark.parametrize(("spo2", "ok"), [(49, False), (50, True), (100, True), (101, False)])
def test_m4_spo2_plausibility_edges(clinic, spo2, ok):
    session = clinic.checked_in(clinic.course())
    if ok:
        assert clinic.vitals(session, **{**NORMAL, "spo2": spo2}).spo2 == spo2
    else:
        with pytest.raises(ValidationError) as refused:
            clinic.vitals(session, **{**NORMAL, "spo2": spo2})
        assert "spo2" in refused.value.message_dict


def test_n5_temperature_with_two_decimals_is_refused_not_rounded(clinic):
    session = clinic.checked_in(clinic.course())
    with pytest.raises(ValidationError) as refused:
        clinic.vitals(session, **{**NORMAL, "temperature_c": Decimal("36.85")})
    assert "temperature_c" in refused.value.message_dict


# --- §P1: weight within the protocol's limits ----------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "ok"),
    [("19.9", False), ("20.0", True), ("300.0", True), ("300.1", False)],
)
def test_p1_dosing_weight_must_lie_within_the_protocols_weight_limits(clinic, weight, ok):
    """SPEC §P1/§M2: the weight used for mg/kg lies within the protocol's limits (20–300 kg)."""
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, **NORMAL)
    # The record may hold an older, out-of-range weight (e.g. imported): dosing refuses it.
    set_patient(clinic, weight_kg=Decimal(weight), weight_measured_on=timezone.localdate())
    session = clinic.fresh(session)
    if ok:
        assert clinic.dose(session).status == "dosing"
    else:
        with pytest.raises(ValidationError, match="weight"):
            clinic.dose(session)


@pytest.mark.parametrize(
    ("weight", "ok"),
    [("19.9", False), ("20", True), ("300", True), ("300.1", False), ("NaN", False)],
)
def test_p1_patient_weight_outside_20_to_300_kg_is_refused_with_a_clear_message(clinic, weight, ok):
    """SPEC §P1: "outside the protocol's weight limits — default 20–300 kg — it is refused"."""
    patient = Patient.objects.get(pk=clinic.patient.pk)
    if ok:
        updated = patient_services.patient_update(
            patient=patient,
            acting_user=clinic.nurse,
            weight_kg=Decimal(weight),
            weight_measured_on=timezone.localdate(),
        )
        assert updated.weight_kg == Decimal(weight)
    else:
        with pytest.raises(ValidationError) as refused:
            patient_services.patient_update(
                patient=patient,
                acting_user=clinic.nurse,
                weight_kg=Decimal(weight),
                weight_measured_on=timezone.localdate(),
            )
        assert "20" in refused.value.message_dict["weight_kg"][0]
        assert "300" in refused.value.message_dict["weight_kg"][0]
        patient.refresh_from_db()
        assert patient.weight_kg != Decimal(weight)


def set_patient(clinic, **values) -> None:
    """Write the record directly, as an import from an older system would have."""
    patient = Patient.objects.get(pk=clinic.patient.pk)
    for name, value in values.items():
        setattr(patient, name, value)
    attribute(patient, acting_user=clinic.nurse, reason="Imported")
    patient.save()


# --- §M12: amounts are Decimal end to end --------------------------------------------------------


def test_m12_the_smallest_waste_of_0_01_mg_is_accepted(clinic, client, psychiatrist, password):
    lot = clinic.lot("ketamine")
    entry = services.waste_record(
        lot=lot,
        acting_user=clinic.nurse,
        amount_mg=Decimal("0.01"),
        reason="Residue in the line",
        witness=psychiatrist,
        witness_password=password,
    )
    assert entry.amount_mg == Decimal("0.01")
    assert entry.balance_mg == Decimal("4999.99")


@pytest.mark.parametrize(
    ("amount", "stored"),
    [(0.01, Decimal("0.01")), ("0.01", Decimal("0.01")), (Decimal("12.50"), Decimal("12.5"))],
    ids=["float", "text", "decimal"],
)
def test_m12_n5_amounts_are_decimal_end_to_end(clinic, psychiatrist, password, amount, stored):
    """SPEC §N5/§M12: a float 0.01 is 0.01 mg, not 0.01000000000000000020816681711721685."""
    entry = services.waste_record(
        lot=clinic.lot("ketamine"),
        acting_user=clinic.nurse,
        amount_mg=amount,
        reason="Residue",
        witness=psychiatrist,
        witness_password=password,
    )
    entry.refresh_from_db()
    assert entry.amount_mg == stored


@pytest.mark.parametrize("amount", ["0.005", "abc", "NaN", True, "-0.01", 0])
def test_m12_n5_an_amount_that_is_not_a_positive_two_decimal_number_is_a_field_error(
    clinic, psychiatrist, password, amount
):
    lot = clinic.lot("ketamine")
    before = ControlledSubstanceEntry.objects.count()
    with pytest.raises(ValidationError) as refused:
        services.waste_record(
            lot=lot,
            acting_user=clinic.nurse,
            amount_mg=amount,
            reason="Residue",
            witness=psychiatrist,
            witness_password=password,
        )
    assert "amount_mg" in refused.value.message_dict
    assert ControlledSubstanceEntry.objects.count() == before


def test_m12_the_waste_form_accepts_0_01_mg(clinic, psychiatrist, password):
    from monitoring.forms import WasteForm

    form_fields = WasteForm.base_fields
    amount = next(name for name in form_fields if "amount" in name)
    field = form_fields[amount]
    assert field.clean("0.01") == Decimal("0.01")
    with pytest.raises(ValidationError):
        field.clean("0.00")


# --- §A4: esketamine under 18 -------------------------------------------------------------------


def birthday_years_ago(years: int, days: int = 0) -> date:
    today = timezone.localdate()
    return today.replace(year=today.year - years) + timedelta(days=days)


def open_esketamine(clinic, acting_user, reason=""):
    return protocol_services.course_start(
        patient=Patient.objects.get(pk=clinic.patient.pk),
        protocol=Protocol.objects.get(slug="esketamine-rems"),
        acting_user=acting_user,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=clinic.psychiatrist,
        planned_sessions=8,
        age_override_reason=reason,
    )


@pytest.mark.parametrize(
    ("born", "refused"),
    [
        (birthday_years_ago(18, days=1), True),  # 18 tomorrow: 17 today
        (birthday_years_ago(18), False),  # 18 today
        (birthday_years_ago(18, days=-1), False),
    ],
    ids=["17-turning-18-tomorrow", "18-today", "18-and-a-day"],
)
def test_a4_esketamine_course_under_18_needs_a_prescribers_override(clinic, born, refused):
    set_patient(clinic, date_of_birth=born)
    if refused:
        with pytest.raises(ValidationError) as error:
            open_esketamine(clinic, clinic.psychiatrist)
        assert "age_override_reason" in error.value.message_dict
        course = open_esketamine(clinic, clinic.psychiatrist, reason="Adolescent TRD, MDT agreed")
        assert course.age_override_by == clinic.psychiatrist
    else:
        assert open_esketamine(clinic, clinic.nurse).age_override_reason == ""


def test_a4_a_nurse_cannot_give_the_age_override(clinic):
    set_patient(clinic, date_of_birth=birthday_years_ago(16))
    with pytest.raises(ValidationError) as error:
        open_esketamine(clinic, clinic.nurse, reason="Family asked")
    assert "prescriber" in " ".join(error.value.message_dict["age_override_reason"])


def test_a4_the_age_limit_does_not_apply_to_iv_ketamine(clinic):
    set_patient(clinic, date_of_birth=birthday_years_ago(16))
    course = protocol_services.course_start(
        patient=Patient.objects.get(pk=clinic.patient.pk),
        protocol=Protocol.objects.get(slug="iv-ketamine"),
        acting_user=clinic.nurse,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=clinic.psychiatrist,
        planned_sessions=6,
    )
    assert course.age_override_reason == ""
