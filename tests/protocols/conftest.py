"""Step 1 fixtures: a course on the shipped IV-ketamine protocol, assessments at each stage."""

from __future__ import annotations

import pytest

from protocols import services
from protocols.models import Assessment, Protocol, TreatmentCourse


def complete_fields(course: TreatmentCourse, **overrides) -> dict:
    """Every field a submittable assessment needs, with no risk flag and no contraindication."""
    rules = course.protocol_version.parsed
    fields = {
        "diagnosis": "Major depressive disorder, recurrent",
        "psychiatric_history": "Three failed antidepressant trials.",
        "psychosis_personal": False,
        "mania_personal": False,
        "psychosis_mania_family": False,
        "substance_use": "None",
        "ketamine_pcp_use": "never",
        "alcohol_use": "None",
        "medical_history": "None relevant",
        "current_medications": "Sertraline 100 mg",
        "allergies": "None known",
        "benzodiazepines": False,
        "sedative_hypnotics": False,
        "psychostimulants": False,
        "maois": False,
        "opioids": False,
        "concomitant_notes": "",
        "pregnancy": "not-pregnant",
        "sbp": 125,
        "dbp": 80,
        "hr": 72,
        "rr": 14,
        "spo2": 98,
        "weight_kg": course.patient.weight_kg,
        "moca_total": None,
        "madrs_total": None,
        "phq9_items": [2, 2, 2, 1, 1, 1, 1, 1, 0],
        "gad7_items": [1, 1, 1, 1, 1, 1, 1],
        "cssrs_answers": {
            "q1": False,
            "q2": False,
            "q3": None,
            "q4": None,
            "q5": None,
            "q6": False,
            "q6_recent": None,
        },
        "contraindications": {
            c.code: {"present": False, "note": ""} for c in rules.contraindications
        },
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def iv_protocol(db) -> Protocol:
    return Protocol.objects.get(slug="iv-ketamine")


@pytest.fixture
def esketamine_protocol(db) -> Protocol:
    return Protocol.objects.get(slug="esketamine-rems")


@pytest.fixture
def course(patient, iv_protocol, nurse, psychiatrist) -> TreatmentCourse:
    return services.course_start(
        patient=patient,
        protocol=iv_protocol,
        acting_user=nurse,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=psychiatrist,
        planned_sessions=6,
    )


@pytest.fixture
def draft(course, nurse) -> Assessment:
    return services.assessment_create(course=course, acting_user=nurse)


@pytest.fixture
def complete_draft(draft, course, nurse) -> Assessment:
    return services.assessment_update(
        assessment=draft, acting_user=nurse, **complete_fields(course)
    )


@pytest.fixture
def submitted(complete_draft, nurse) -> Assessment:
    return services.assessment_submit(assessment=complete_draft, acting_user=nurse)
