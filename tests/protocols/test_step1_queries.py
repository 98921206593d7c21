"""Query counts of the Step 1 pages do not grow with the data (SPEC §N3): the sign-off queue and
the patient chart run the same number of queries for 2 assessments as for 25. The navigation's
sign-off badge shows the number waiting."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from clinic.models import Role
from protocols import services
from protocols.models import Assessment, TreatmentCourse
from tests.factories import PatientFactory, UserFactory
from tests.protocols.conftest import complete_fields

pytestmark = pytest.mark.django_db

SMALL, LARGE = 2, 25
BADGE = re.compile(r'data-testid="nav-count-sign-off">(\d+)<')


def open_course(patient, protocol, nurse, psychiatrist) -> TreatmentCourse:
    return services.course_start(
        patient=patient,
        protocol=protocol,
        acting_user=nurse,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=psychiatrist,
        planned_sessions=6,
    )


def submitted_assessment(course, nurse, n: int) -> Assessment:
    """A submitted assessment; every few carry a flag or a contraindication shown in the lists."""
    rules = course.protocol_version.parsed
    answers = complete_fields(course)["contraindications"]
    overrides = {}
    if n % 3 == 1:
        relative = next(c for c in rules.contraindications if not c.is_absolute)
        answers[relative.code] = {"present": True, "note": "Acknowledged."}
    if n % 3 == 2:
        absolute = next(c for c in rules.contraindications if c.is_absolute)
        answers[absolute.code] = {"present": True, "note": ""}
    if n % 4 == 3:
        overrides["phq9_items"] = [1] * 9  # item 9 > 0: suicide-risk flag
    draft = services.assessment_create(course=course, acting_user=nurse)
    services.assessment_update(
        assessment=draft,
        acting_user=nurse,
        **complete_fields(course, contraindications=answers, **overrides),
    )
    return services.assessment_submit(assessment=draft, acting_user=nurse)


def measured(client, url: str) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries), response.content.decode()


def assert_constant(client, url, grow, django_assert_max_num_queries) -> tuple[str, str]:
    """Measure `url` with the small data set, `grow()` it, measure again: the same count."""
    client.get(url)  # warm per-process caches (content types) so both runs are alike
    small_count, small_page = measured(client, url)

    grow()

    with django_assert_max_num_queries(small_count):
        large_count, large_page = measured(client, url)
    assert large_count == small_count
    return small_page, large_page


def badge(page: str) -> int:
    match = BADGE.search(page)
    assert match, "the sign-off badge is missing from the navigation"
    return int(match.group(1))


# --- The sign-off queue --------------------------------------------------------------------------


def test_the_signoff_queue_runs_the_same_queries_for_2_and_25_assessments(
    client,
    site,
    nurse,
    psychiatrist,
    iv_protocol,
    esketamine_protocol,
    django_assert_max_num_queries,
):
    protocols = (iv_protocol, esketamine_protocol)
    made: list[Assessment] = []

    def add(count: int) -> None:
        for _ in range(count):
            n = len(made)
            patient = PatientFactory(home_site=site, created_by=nurse)
            course = open_course(patient, protocols[n % 2], nurse, psychiatrist)
            made.append(submitted_assessment(course, nurse, n))

    add(SMALL)
    client.force_login(psychiatrist)
    url = reverse("protocols:signoff_queue")

    small_page, large_page = assert_constant(
        client, url, lambda: add(LARGE - SMALL), django_assert_max_num_queries
    )

    for page, count in ((small_page, SMALL), (large_page, LARGE)):
        signing_links = {reverse("protocols:assessment_sign", args=[a.pk]) for a in made[:count]}
        assert all(link in page for link in signing_links)
        assert badge(page) == count


# --- The patient chart ---------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [False, True], ids=["submitted", "approved"])
def test_the_chart_runs_the_same_queries_for_2_and_25_assessments(
    client,
    patient,
    nurse,
    psychiatrist,
    password,
    iv_protocol,
    signed,
    django_assert_max_num_queries,
):
    made: list[Assessment] = []

    def add(count: int) -> None:
        for _ in range(count):
            course = open_course(patient, iv_protocol, nurse, psychiatrist)
            assessment = submitted_assessment(course, nurse, len(made) * 3)  # no absolute
            if signed:
                services.assessment_sign(
                    assessment=assessment, signer=psychiatrist, password=password, approve=True
                )
            made.append(assessment)

    add(SMALL)
    client.force_login(psychiatrist)
    url = reverse("patients:chart", args=[patient.pk])

    small_page, large_page = assert_constant(
        client, url, lambda: add(LARGE - SMALL), django_assert_max_num_queries
    )

    for page, count in ((small_page, SMALL), (large_page, LARGE)):
        detail_links = {reverse("protocols:assessment_detail", args=[a.pk]) for a in made[:count]}
        assert all(link in page for link in detail_links)
        if signed:
            assert BADGE.search(page) is None  # nothing waiting: no badge
        else:
            assert badge(page) == count
        assert "Signature invalid" not in page


def test_the_nav_badge_counts_only_the_submitted_assessments_of_the_users_sites(
    client, submitted, psychiatrist, nurse, other_site, outsider, iv_protocol
):
    elsewhere = UserFactory(
        username="psychiatrist-elsewhere", roles=[Role.PSYCHIATRIST], sites=[other_site]
    )
    their_patient = PatientFactory(home_site=other_site, created_by=outsider)
    submitted_assessment(open_course(their_patient, iv_protocol, outsider, elsewhere), outsider, 0)
    client.force_login(psychiatrist)

    page = client.get(reverse("protocols:signoff_queue")).content.decode()

    assert badge(page) == 1
    services.assessment_update(assessment=submitted, acting_user=nurse, allergies="Latex")
    page = client.get(reverse("protocols:signoff_queue")).content.decode()
    assert BADGE.search(page) is None  # nothing waiting here: no badge
