"""Step 2 fixtures: a patient who passes the start gate, stock, and sessions at each phase."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from monitoring import services
from monitoring.models import DrugLot, TreatmentSession
from patients import services as patient_services
from patients.models import ConsentKind
from protocols import services as protocol_services
from tests.factories import ConsentTemplateFactory

# Step 1's fixtures, reused: a session needs an approved course.
from tests.protocols.conftest import complete_fields, course, esketamine_protocol, iv_protocol

__all__ = ["complete_fields", "course", "esketamine_protocol", "iv_protocol"]


@pytest.fixture
def consented(patient, nurse):
    """A valid ketamine-treatment consent for `patient`."""
    template = ConsentTemplateFactory(kind=ConsentKind.KETAMINE_TREATMENT, created_by=nurse)
    return patient_services.consent_record(
        patient=patient, template=template, acting_user=nurse, signature_method="tablet"
    )


@pytest.fixture
def approved_course(course, nurse, psychiatrist, password, consented):
    """The IV-ketamine course with its assessment signed approved: the course is active."""
    draft = protocol_services.assessment_create(course=course, acting_user=nurse)
    protocol_services.assessment_update(
        assessment=draft, acting_user=nurse, **complete_fields(course)
    )
    protocol_services.assessment_submit(assessment=draft, acting_user=nurse)
    protocol_services.assessment_sign(
        assessment=draft, signer=psychiatrist, password=password, approve=True
    )
    course.refresh_from_db()
    return course


@pytest.fixture
def ketamine_lot(site, nurse) -> DrugLot:
    return services.lot_receive(
        site=site,
        acting_user=nurse,
        drug="ketamine",
        lot_number="KET-TEST-1",
        concentration_mg_per_ml=Decimal("10"),
        expires_on=timezone.localdate() + timedelta(days=365),
        received_mg=Decimal("1000"),
    )


@pytest.fixture
def scheduled(approved_course, nurse, anesthesiologist) -> TreatmentSession:
    return services.session_schedule(
        course=approved_course,
        acting_user=nurse,
        scheduled_at=timezone.now(),
        chair="4",
        supervising_clinician=anesthesiologist,
    )


@pytest.fixture
def checked_in(scheduled, nurse) -> TreatmentSession:
    return services.session_check_in(
        session=scheduled,
        acting_user=nurse,
        escort_confirmed=True,
        escort_details="Sister, by car",
    )


@pytest.fixture
def ready(checked_in, nurse) -> TreatmentSession:
    """Checked in with normal pre-dose vitals: the start gate is open."""
    services.vitals_record(
        session=checked_in, acting_user=nurse, sbp=125, dbp=80, hr=70, rr=14, spo2=98, moaas=5
    )
    return checked_in


@pytest.fixture
def dosing(ready, nurse, psychiatrist, ketamine_lot, patient) -> TreatmentSession:
    """The infusion has started (0.5 mg/kg at the patient's weight)."""
    dose_mg = Decimal(patient.weight_kg) * Decimal("0.5")
    services.dose_record(
        session=ready,
        acting_user=nurse,
        lot=ketamine_lot,
        dose_mg=dose_mg,
        volume_ml=dose_mg / ketamine_lot.concentration_mg_per_ml,
        started_at=timezone.now(),
        prescriber=psychiatrist,
    )
    ready.refresh_from_db()
    return ready
