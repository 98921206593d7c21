"""Audit fixtures: one clinic whose every audited table holds rows, written through the services.

The append-only, tampering and bulk-guard modules parametrize over every protected table and
every tracked model; building the clinic once per module (inside a transaction that is rolled
back afterwards) keeps those hundreds of tests quick. Each test still runs in its own savepoint
on top, so whatever a test does to the rows is undone before the next one.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.test import RequestFactory, override_settings
from django.utils import timezone

from audit import services as audit_services
from audit.chain import chained_models
from audit.models import AccessLog, AuditEvent, Finding, VerificationRun
from clinic import signatures
from clinic.models import Role, Site, User
from clinic.services import attribute
from followups import services as followup_services
from monitoring import services as monitoring_services
from monitoring.models import Discharge, DrugLot, Incident, TreatmentSession
from patients import services as patient_services
from patients.models import ConsentKind, Patient
from protocols import services as protocol_services
from protocols.models import Assessment, Protocol, TreatmentCourse
from tests.factories import TEST_PASSWORD, ConsentTemplateFactory, SiteFactory, UserFactory
from tests.protocols.conftest import complete_fields

PROTECTED_TABLES: list[str] = importlib.import_module(
    "audit.migrations.0002_append_only_and_roles"
).PROTECTED_TABLES

# The audit trail's own tables, append-only although nothing links them into a chain.
AUDIT_OWN_MODELS = (AuditEvent, VerificationRun, Finding)


def append_only_models() -> list[type[models.Model]]:
    """Every model whose table must refuse UPDATE and DELETE (SPEC §C2)."""
    return [*chained_models(), *AUDIT_OWN_MODELS]


def model_of_table(table: str) -> type[models.Model]:
    (model,) = [m for m in apps.get_models(include_auto_created=True) if m._meta.db_table == table]
    return model


def tracked_models() -> list[type[models.Model]]:
    """The models simple-history tracks (their own rows, not an m2m's through table)."""
    return [
        m.instance_type
        for m in chained_models()
        if hasattr(m, "instance_type") and not m.instance_type._meta.auto_created
    ]


def table_rows(table: str) -> list[tuple]:
    """Every stored row of `table`, in primary-key order: what a refused write must not touch."""
    model = model_of_table(table)
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT * FROM {quote(table)} ORDER BY {quote(model._meta.pk.column)}"  # noqa: S608
        )
        return cursor.fetchall()


def altered_value(model: type[models.Model], instance: models.Model) -> tuple[str, object]:
    """A column of `instance` and a different value for it: what a tamperer would write."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    for field in fields:
        if isinstance(field, models.CharField | models.TextField) and not field.choices:
            current = getattr(instance, field.attname) or ""
            return field.attname, ("altered " + current)[: field.max_length or None]
    # Tables of foreign keys only (User.sites' history): point one at another row.
    field = next(f for f in fields if f.is_relation)
    return field.attname, getattr(instance, field.attname) + 1


@dataclass
class AuditedClinic:
    site: Site
    nurse: User
    psychiatrist: User
    anesthesiologist: User
    administrator: User
    patient: Patient
    course: TreatmentCourse
    assessment: Assessment
    session: TreatmentSession
    lot: DrugLot
    access: AccessLog


def _persona(username: str, role: Role, site: Site) -> User:
    return UserFactory(
        username=username, roles=[role], sites=[site], is_staff=role == Role.ADMINISTRATOR
    )


def _build_clinic() -> AuditedClinic:
    site = SiteFactory(name="Audit Lakeside", time_zone="Europe/London")
    nurse = _persona("audit-nurse", Role.NURSE, site)
    psychiatrist = _persona("audit-psychiatrist", Role.PSYCHIATRIST, site)
    anesthesiologist = _persona("audit-anesthesiologist", Role.ANESTHESIOLOGIST, site)
    administrator = _persona("audit-administrator", Role.ADMINISTRATOR, site)

    patient = patient_services.patient_register(
        site=site,
        acting_user=nurse,
        mrn="AUD-0001",
        given_name="Iris",
        family_name="Calloway",
        date_of_birth=date(1981, 4, 9),
        sex=Patient.Sex.FEMALE,
        weight_kg=Decimal("68.0"),
        weight_measured_on=timezone.localdate() - timedelta(days=2),
    )
    patient = patient_services.patient_update(
        patient=patient, acting_user=nurse, phone="0113 496 0777"
    )
    template = ConsentTemplateFactory(kind=ConsentKind.KETAMINE_TREATMENT, created_by=nurse)
    patient_services.consent_record(
        patient=patient, template=template, acting_user=nurse, signature_method="tablet"
    )

    course = protocol_services.course_start(
        patient=patient,
        protocol=Protocol.objects.get(slug="iv-ketamine"),
        acting_user=nurse,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=psychiatrist,
        planned_sessions=6,
    )
    assessment = protocol_services.assessment_create(course=course, acting_user=nurse)
    protocol_services.assessment_update(
        assessment=assessment, acting_user=nurse, **complete_fields(course)
    )
    protocol_services.assessment_submit(assessment=assessment, acting_user=nurse)
    with contextlib.suppress(ValidationError):  # a failed signing attempt is evidence too
        protocol_services.assessment_sign(
            assessment=assessment, signer=psychiatrist, password="wrong", approve=True
        )
    protocol_services.assessment_sign(
        assessment=assessment, signer=psychiatrist, password=TEST_PASSWORD, approve=True
    )
    assessment.refresh_from_db()
    signatures.addendum_add(
        record=assessment,
        author=psychiatrist,
        password=TEST_PASSWORD,
        text="Allergy to plasters noted after signing.",
        reason="Patient mentioned it at the next visit.",
    )
    course.refresh_from_db()

    # No service creates protocols (the shipped ones come from migrations): a plain save,
    # attributed like the services do, still writes and links a history row.
    protocol = Protocol(slug="audit-trial", name="Audit trial protocol")
    attribute(protocol, acting_user=administrator, reason="Created for the audit tests")
    protocol.save()
    protocol_services.protocol_version_create(
        protocol=protocol,
        acting_user=administrator,
        rules=course.protocol_version.rules,
        change_summary="First draft",
    )

    lot = monitoring_services.lot_receive(
        site=site,
        acting_user=nurse,
        drug="ketamine",
        lot_number="AUD-KET-1",
        concentration_mg_per_ml=Decimal("10"),
        expires_on=timezone.localdate() + timedelta(days=365),
        received_mg=Decimal("100"),
    )
    session = monitoring_services.session_schedule(
        course=course,
        acting_user=nurse,
        scheduled_at=timezone.now(),
        chair="2",
        supervising_clinician=anesthesiologist,
    )
    monitoring_services.session_check_in(
        session=session, acting_user=nurse, escort_confirmed=True, escort_details="Brother"
    )
    monitoring_services.vitals_record(
        session=session, acting_user=nurse, sbp=125, dbp=80, hr=70, rr=14, spo2=98, moaas=5
    )
    dose_mg = Decimal(patient.weight_kg) * Decimal("0.5")
    monitoring_services.dose_record(
        session=session,
        acting_user=nurse,
        lot=lot,
        dose_mg=dose_mg,
        volume_ml=dose_mg / lot.concentration_mg_per_ml,
        started_at=timezone.now(),
        prescriber=psychiatrist,
    )
    session.refresh_from_db()
    monitoring_services.vitals_record(
        session=session, acting_user=nurse, sbp=200, dbp=80, hr=70, rr=14, spo2=84, moaas=5
    )
    monitoring_services.observation_record(
        session=session, acting_user=nurse, kind="note", text="Calm, talking."
    )
    # Wasting more than the lot holds opens a discrepancy incident (SPEC §M12).
    monitoring_services.waste_record(
        lot=lot,
        acting_user=nurse,
        amount_mg=Decimal("500"),
        reason="Vial dropped",
        witness=anesthesiologist,
        witness_password=TEST_PASSWORD,
    )
    # Discharging for real needs the whole observation period; the row and its linked history
    # are what these tests need.
    discharge = Discharge(
        session=session,
        aldrete_activity=2,
        aldrete_respiration=2,
        aldrete_circulation=2,
        aldrete_consciousness=2,
        aldrete_spo2=2,
        moaas=5,
        escort_present=True,
        no_driving_instruction_given=True,
        discharged_by=anesthesiologist,
    )
    attribute(discharge, acting_user=anesthesiologist, reason="Discharged")
    discharge.save()
    followup_services.plan_from(course=course, start=timezone.now(), acting_user=nurse)

    request = RequestFactory().get(f"/patients/{patient.pk}/")
    request.user = nurse
    access = audit_services.access_log(request=request, what="Patient chart", record=patient)

    audit_services.verification_record(triggered_by="audit test fixture")
    # A failed run with a finding of its own, so that the clean run above has no dependants.
    now = timezone.now()
    failed = VerificationRun.objects.create(
        started_at=now,
        finished_at=now,
        ok=False,
        chains=1,
        links=1,
        signatures=0,
        problems=1,
        first_break="fixture",
        triggered_by="audit test fixture",
    )
    Finding.objects.create(run=failed, kind=Finding.Kind.ROW_MISSING, detail="fixture finding")

    assert Incident.objects.filter(lot=lot).exists()
    return AuditedClinic(
        site=site,
        nurse=nurse,
        psychiatrist=psychiatrist,
        anesthesiologist=anesthesiologist,
        administrator=administrator,
        patient=patient,
        course=course,
        assessment=assessment,
        session=session,
        lot=lot,
        access=access,
    )


@pytest.fixture(scope="module")
def audited_clinic(django_db_setup, django_db_blocker):
    """A clinic with rows in every protected table and every tracked model, all linked.

    Built once per module in a transaction that is rolled back when the module is done.
    """
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            with override_settings(
                PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]
            ):
                clinic = _build_clinic()
            # Run the foreign-key checks Django defers to commit now, at the module's level:
            # PostgreSQL refuses ALTER TABLE and TRUNCATE while any are pending.
            connection.check_constraints()
            empty = [t for t in PROTECTED_TABLES if not table_rows(t)]
            empty += [m._meta.label for m in tracked_models() if not m._base_manager.exists()]
            assert empty == [], f"the fixture left these empty: {empty}"
        except BaseException:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)
            raise
    yield clinic
    with django_db_blocker.unblock():
        transaction.set_rollback(True)
        atomic.__exit__(None, None, None)
