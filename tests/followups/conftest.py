"""Step 3 fixtures: courses on both shipped protocols, the staff who receive reminders, a clean
database for the transactional modules, and a mail backend that keeps what it sends."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

from clinic.models import Role
from protocols import services as protocol_services
from protocols.models import TreatmentCourse
from tests.factories import PatientFactory, UserFactory

# Step 1 and Step 2 fixtures, reused: a follow-up plan needs a course, a discharge a session.
from tests.monitoring.conftest import (
    approved_course,
    checked_in,
    consented,
    course,
    dosing,
    esketamine_protocol,
    iv_protocol,
    ketamine_lot,
    ready,
    scheduled,
)
from tests.protocols.conftest import complete_fields

__all__ = [
    "approved_course",
    "checked_in",
    "consented",
    "course",
    "dosing",
    "esketamine_protocol",
    "iv_protocol",
    "ketamine_lot",
    "ready",
    "scheduled",
]


@pytest.fixture(autouse=True)
def _mail_kept_in_memory(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def approve(course: TreatmentCourse, *, nurse, psychiatrist, password) -> TreatmentCourse:
    """Sign the pre-treatment assessment approved: the course becomes active."""
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
def esketamine_course(site, esketamine_protocol, nurse, psychiatrist, password):
    """An active course on the shipped esketamine (REMS) protocol, for a patient of its own (the
    `patient` fixture is the IV-ketamine course's)."""
    course = protocol_services.course_start(
        patient=PatientFactory(home_site=site, created_by=nurse),
        protocol=esketamine_protocol,
        acting_user=nurse,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=psychiatrist,
        planned_sessions=8,
    )
    return approve(course, nurse=nurse, psychiatrist=psychiatrist, password=password)


@pytest.fixture
def second_psychiatrist(site):
    """A psychiatrist of the same site who is not responsible for the course."""
    return UserFactory(username="psychiatrist-two", roles=[Role.PSYCHIATRIST], sites=[site])


@pytest.fixture
def other_site_staff(other_site):
    """A psychiatrist, a nurse and an administrator of the other site."""
    return {
        role: UserFactory(username=f"other-{role.name.lower()}", roles=[role], sites=[other_site])
        for role in (Role.PSYCHIATRIST, Role.NURSE, Role.ADMINISTRATOR)
    }


@pytest.fixture
def other_site_course(other_site, other_site_staff, iv_protocol) -> TreatmentCourse:
    nurse = other_site_staff[Role.NURSE]
    patient = PatientFactory(home_site=other_site, created_by=nurse)
    return protocol_services.course_start(
        patient=patient,
        protocol=iv_protocol,
        acting_user=nurse,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=other_site_staff[Role.PSYCHIATRIST],
        planned_sessions=6,
    )


@pytest.fixture(scope="module")
def empty_database_for_module(django_db_setup, django_db_blocker):
    """For the transactional modules (tests/monitoring/test_concurrency.py explains why).

    Each transactional test ends with a flush; its serialized rollback reloads the migrated rows
    (roles, default protocols) before the next one, which only works on an empty database. Flush
    first, without re-creating content types, and put the migrated rows back at the end for the
    tests that follow. Sequences are kept so that new rows never reuse a reloaded row's id.
    """
    flush = {
        "interactive": False,
        "inhibit_post_migrate": True,
        "reset_sequences": False,
        "verbosity": 0,
    }
    with django_db_blocker.unblock():
        call_command("flush", **flush)
        yield
        call_command("flush", **flush)
        connection.creation.deserialize_db_from_string(connection._test_serialized_contents)
