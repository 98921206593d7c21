"""Step 1 flags for the psychiatrist (SPEC §I, §F2, §A4).

Sources: SPEC §I ("GAD-7 ... ≥ 10 warrants evaluation"; Spitzer et al. 2006: a cut-point of 10
for generalised anxiety disorder), §F2 ("GAD-7 ≥ 10 carries a 'further evaluation' flag for the
psychiatrist"), §A4 (esketamine under 18 needs a prescriber's override reason).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from clinic.services import attribute
from patients.models import Patient
from protocols import services as protocol_services
from protocols.models import Protocol, TreatmentCourse
from tests.protocols.conftest import complete_fields

pytestmark = pytest.mark.django_db


def gad7_items(total: int) -> list[int]:
    items = [0] * 7
    for i in range(total):
        items[i % 7] += 1
    return items


@pytest.mark.parametrize(("total", "flag"), [(9, False), (10, True), (11, True)])
def test_i_gad7_of_10_or_more_is_flagged_for_further_evaluation(clinic, client, total, flag):
    course = clinic.course(approve=False)
    draft = protocol_services.assessment_create(course=course, acting_user=clinic.nurse)
    draft = protocol_services.assessment_update(
        assessment=draft,
        acting_user=clinic.nurse,
        **complete_fields(course, gad7_items=gad7_items(total)),
    )
    assert draft.gad7_total == total
    assert draft.gad7_evaluation_flag is flag
    protocol_services.assessment_submit(assessment=draft, acting_user=clinic.nurse)

    client.force_login(clinic.psychiatrist)
    queue = client.get(reverse("protocols:signoff_queue")).content.decode()
    assert ('data-testid="gad7-flag"' in queue) is flag
    page = client.get(
        reverse("protocols:assessment_detail", kwargs={"assessment_id": draft.pk})
    ).content.decode()
    assert ("further evaluation</span>" in page) is flag


def test_a4_the_course_form_asks_a_prescriber_for_the_age_override(clinic, client):
    """SPEC §A4: the course page refuses an esketamine course for a 17-year-old without the
    override reason, with the error on its field, and saves it with one."""
    patient = Patient.objects.get(pk=clinic.patient.pk)
    today = timezone.localdate()
    patient.date_of_birth = today.replace(year=today.year - 17) - timedelta(days=1)
    attribute(patient, acting_user=clinic.nurse, reason="Corrected date of birth")
    patient.save()
    url = reverse("protocols:course_new", kwargs={"patient_id": patient.pk})
    data = {
        "protocol": Protocol.objects.get(slug="esketamine-rems").pk,
        "indication": TreatmentCourse.Indication.TRD,
        "responsible_psychiatrist": clinic.psychiatrist.pk,
        "planned_sessions": 8,
    }
    client.force_login(clinic.psychiatrist)
    refused = client.post(url, data)
    assert refused.status_code == 200
    assert "age_override_reason" in refused.context["form"].errors
    assert not TreatmentCourse.objects.filter(patient=patient).exists()

    saved = client.post(url, {**data, "age_override_reason": "Adolescent TRD, MDT agreed"})
    assert saved.status_code == 302
    course = TreatmentCourse.objects.get(patient=patient)
    assert course.age_override_by == clinic.psychiatrist
