"""A small clinic for the clinical-rule tests: courses on the shipped protocols (or on a version
published with one rule changed, as an administrator would), sessions at each phase.

Every test here is written from a SPEC sentence or a clinical source, cited in its name or
docstring, and probes the rule at its edge, just below and just above.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from clinic.models import Role
from monitoring import services
from monitoring.models import DrugLot, TreatmentSession
from patients import services as patient_services
from patients.models import ConsentKind
from protocols import services as protocol_services
from protocols.models import Protocol, TreatmentCourse
from tests.factories import ConsentTemplateFactory, UserFactory
from tests.protocols.conftest import complete_fields

NORMAL = {"sbp": 125, "dbp": 80, "hr": 70, "rr": 14, "spo2": 98, "moaas": 5}
CENT = Decimal("0.01")
CONSENT_KIND = {
    "iv-ketamine": ConsentKind.KETAMINE_TREATMENT,
    "esketamine-rems": ConsentKind.ESKETAMINE_REMS,
}
DRUG = {"iv-ketamine": "ketamine", "esketamine-rems": "esketamine"}


class Clinic:
    """Builds courses and sessions for one patient through the services, as staff would."""

    def __init__(self, *, site, patient, nurse, psychiatrist, anesthesiologist, password):
        self.site = site
        self.patient = patient
        self.nurse = nurse
        self.psychiatrist = psychiatrist
        self.anesthesiologist = anesthesiologist
        self.password = password
        self._admin = None
        self._lots: dict[str, DrugLot] = {}
        self._consented: set[str] = set()

    @property
    def admin(self):
        if self._admin is None:
            self._admin = UserFactory(
                username="clinical-admin", roles=[Role.ADMINISTRATOR], sites=[self.site]
            )
        return self._admin

    def publish(self, slug: str, change: Callable[[dict], None]) -> None:
        """Publish a new version of `slug` with `change` applied to the current rules."""
        protocol = Protocol.objects.get(slug=slug)
        rules = copy.deepcopy(protocol_services.current_version(protocol).rules)
        change(rules)
        version = protocol_services.protocol_version_create(
            protocol=protocol, acting_user=self.admin, rules=rules, change_summary="Test change"
        )
        protocol_services.protocol_version_publish(version=version, acting_user=self.admin)

    def course(self, slug: str = "iv-ketamine", *, approve: bool = True) -> TreatmentCourse:
        if slug not in self._consented:
            template = ConsentTemplateFactory(kind=CONSENT_KIND[slug], created_by=self.nurse)
            patient_services.consent_record(
                patient=self.patient,
                template=template,
                acting_user=self.nurse,
                signature_method="tablet",
                prescriber=self.psychiatrist if slug == "esketamine-rems" else None,
            )
            self._consented.add(slug)
        course = protocol_services.course_start(
            patient=self.patient,
            protocol=Protocol.objects.get(slug=slug),
            acting_user=self.psychiatrist,
            indication=TreatmentCourse.Indication.TRD,
            responsible_psychiatrist=self.psychiatrist,
            planned_sessions=8,
        )
        if approve:
            draft = protocol_services.assessment_create(course=course, acting_user=self.nurse)
            protocol_services.assessment_update(
                assessment=draft, acting_user=self.nurse, **complete_fields(course)
            )
            protocol_services.assessment_submit(assessment=draft, acting_user=self.nurse)
            protocol_services.assessment_sign(
                assessment=draft, signer=self.psychiatrist, password=self.password, approve=True
            )
            course.refresh_from_db()
        return course

    def lot(self, drug: str) -> DrugLot:
        if drug not in self._lots:
            concentration = Decimal("10") if drug == "ketamine" else Decimal("140")
            self._lots[drug] = services.lot_receive(
                site=self.site,
                acting_user=self.nurse,
                drug=drug,
                lot_number=f"{drug[:3].upper()}-CLIN-1",
                concentration_mg_per_ml=concentration,
                expires_on=timezone.localdate() + timedelta(days=365),
                received_mg=Decimal("5000"),
            )
        return self._lots[drug]

    def checked_in(self, course: TreatmentCourse) -> TreatmentSession:
        session = services.session_schedule(
            course=course,
            acting_user=self.nurse,
            scheduled_at=timezone.now(),
            chair="2",
            supervising_clinician=self.anesthesiologist,
        )
        return services.session_check_in(
            session=session,
            acting_user=self.nurse,
            escort_confirmed=True,
            escort_details="Partner, by car",
        )

    def vitals(self, session: TreatmentSession, at: datetime | None = None, **values):
        return services.vitals_record(
            session=session, acting_user=self.nurse, measured_at=at, **values
        )

    def dose_values(self, session: TreatmentSession) -> dict:
        rules = session.rules
        lot = self.lot(rules.drug)
        if rules.dose["route"] == "iv":
            per_kg = Decimal(str(rules.dose["default_mg_per_kg"]))
            dose_mg = (Decimal(str(session.patient.weight_kg)) * per_kg).quantize(CENT)
        else:
            dose_mg = Decimal(str(rules.dose["allowed_mg"][0]))
        return {
            "lot": lot,
            "dose_mg": dose_mg,
            "volume_ml": (dose_mg / lot.concentration_mg_per_ml).quantize(CENT),
        }

    def dose(self, session: TreatmentSession, at: datetime | None = None) -> TreatmentSession:
        services.dose_record(
            session=session,
            acting_user=self.nurse,
            started_at=at or timezone.now(),
            prescriber=self.psychiatrist,
            **self.dose_values(session),
        )
        return self.fresh(session)

    def fresh(self, session: TreatmentSession) -> TreatmentSession:
        return TreatmentSession.objects.select_related(
            "course__protocol_version", "patient", "site"
        ).get(pk=session.pk)

    def conditions(self, session: TreatmentSession, at: datetime | None = None) -> dict:
        from monitoring import gates

        return {c.code: c for c in gates.start_gate(self.fresh(session), at=at)}


@pytest.fixture
def clinic(site, patient, nurse, psychiatrist, anesthesiologist, password) -> Clinic:
    return Clinic(
        site=site,
        patient=patient,
        nurse=nurse,
        psychiatrist=psychiatrist,
        anesthesiologist=anesthesiologist,
        password=password,
    )
