"""Query counts that do not grow with the data, and keyset pagination (SPEC §N3)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.core import signing
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from clinic.models import Role
from clinic.pagination import keyset_page
from patients.models import ConsentKind, Patient
from patients.selectors import patient_consent_summary, patient_list_for_user
from patients.views import PAGE_SIZE
from tests.factories import (
    ConsentRecordFactory,
    ConsentTemplateFactory,
    PatientFactory,
    SiteFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

FIELDS = ("family_name", "given_name", "id")


def measure(client, url, params=None) -> int:
    with CaptureQueriesContext(connection) as context:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(context.captured_queries)


def add_patients(count: int, sites, creator) -> None:
    for i in range(count):
        PatientFactory(home_site=sites[i % len(sites)], created_by=creator)


@pytest.fixture
def two_site_nurse(site, other_site):
    return UserFactory(username="two-site-nurse", roles=[Role.NURSE], sites=[site, other_site])


# --- Patient list -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [{}, {"site": "all"}, {"q": "a"}, {"q": "a b"}],
    ids=["current-site", "all-sites", "search", "two-token-search"],
)
def test_the_patient_list_query_count_does_not_grow_with_patients(
    client, django_assert_max_num_queries, site, other_site, two_site_nurse, params
):
    client.force_login(two_site_nurse)
    url = reverse("patients:list")
    add_patients(5, [site, other_site], two_site_nurse)
    measure(client, url, params)  # warm caches shared by every request (content types...)
    small = measure(client, url, params)

    add_patients(55, [site, other_site], two_site_nurse)

    with django_assert_max_num_queries(small):
        response = client.get(url, params)
    assert response.status_code == 200


def test_the_patient_list_and_its_next_page_count_no_patients(client, site, nurse):
    add_patients(PAGE_SIZE * 2 + 3, [site], nurse)
    client.force_login(nurse)
    url = reverse("patients:list")

    with CaptureQueriesContext(connection) as first:
        response = client.get(url)
    cursor = response.context["page"].next_cursor
    with CaptureQueriesContext(connection) as second:
        client.get(url, {"after": cursor})

    for query in [*first.captured_queries, *second.captured_queries]:
        sql = query["sql"].upper()
        assert not ("COUNT(" in sql and "PATIENTS_" in sql), query["sql"]


def test_the_htmx_rows_query_count_does_not_grow_with_patients(
    client, django_assert_max_num_queries, site, nurse
):
    client.force_login(nurse)
    url = reverse("patients:list")
    add_patients(5, [site], nurse)
    measure(client, url)
    with CaptureQueriesContext(connection) as context:
        client.get(url, headers={"HX-Request": "true"})
    small = len(context.captured_queries)

    add_patients(55, [site], nurse)

    with django_assert_max_num_queries(small):
        response = client.get(url, headers={"HX-Request": "true"})
    assert len(response.context["page"].items) == PAGE_SIZE


# --- Chart --------------------------------------------------------------------------------------


def add_consents(patient, count: int, templates, prescriber) -> None:
    """Consents of every kind and state, each with its own witness (and withdrawer)."""
    now = timezone.now()
    for i in range(count):
        template = templates[i % len(templates)]
        extra = {}
        if template.kind == ConsentKind.ESKETAMINE_REMS:
            extra["prescriber"] = prescriber
        if i % 3 == 0:
            extra.update(
                withdrawn_at=now - timedelta(days=i),
                withdrawn_by=UserFactory(),
                withdrawal_reason="Changed mind.",
            )
        ConsentRecordFactory(
            patient=patient, template=template, signed_at=now - timedelta(days=i + 1), **extra
        )


@pytest.fixture
def templates(administrator):
    kinds = [ConsentKind.KETAMINE_TREATMENT, ConsentKind.ESKETAMINE_REMS, ConsentKind.DATA_SHARING]
    made = []
    for version, kind in itertools.product((1, 2), kinds):
        made.append(
            ConsentTemplateFactory(
                kind=kind,
                version=version,
                created_by=administrator,
                requires_reconsent=version == 2 and kind == ConsentKind.KETAMINE_TREATMENT,
            )
        )
    return made


def test_the_chart_query_count_does_not_grow_with_consents(
    client, django_assert_max_num_queries, nurse, psychiatrist, patient, templates
):
    client.force_login(nurse)
    url = reverse("patients:chart", args=[patient.pk])
    add_consents(patient, 5, templates, psychiatrist)
    measure(client, url)
    small = measure(client, url)

    add_consents(patient, 55, templates, psychiatrist)

    with django_assert_max_num_queries(small):
        response = client.get(url)
    assert len(response.context["consents"]) == 50


def test_the_consent_summary_query_count_does_not_grow_with_consents(
    django_assert_max_num_queries, psychiatrist, patient, templates
):
    add_consents(patient, 5, templates, psychiatrist)
    with CaptureQueriesContext(connection) as context:
        patient_consent_summary(patient=patient)
    small = len(context.captured_queries)

    add_consents(patient, 55, templates, psychiatrist)

    with django_assert_max_num_queries(small):
        summary = patient_consent_summary(patient=patient)
        # Reading what the chart shows must not query either.
        for item in summary:
            if item.consent is not None:
                _ = (item.consent.template.version, item.consent.valid_until)


# --- Keyset pagination --------------------------------------------------------------------------


def walk(client, params=None):
    """Follow 'next page' from the first page to the last; return the pages' patients."""
    pages = []
    params = dict(params or {})
    while True:
        response = client.get(reverse("patients:list"), params)
        assert response.status_code == 200
        page = response.context["page"]
        assert page.is_first == (not pages)
        pages.append(list(page.items))
        if page.next_cursor is None:
            return pages
        params["after"] = page.next_cursor


def test_walking_every_page_shows_each_patient_once_in_order_even_with_identical_names(
    client, site, nurse
):
    for _ in range(12):
        PatientFactory(home_site=site, created_by=nurse, family_name="Smith", given_name="John")
    for _ in range(5):
        PatientFactory(home_site=site, created_by=nurse, family_name="Smith", given_name="Jon")
    add_patients(PAGE_SIZE * 2, [site], nurse)
    client.force_login(nurse)

    pages = walk(client)

    seen = [patient.pk for page in pages for patient in page]
    expected = list(
        patient_list_for_user(user=nurse).order_by(*FIELDS).values_list("id", flat=True)
    )
    assert len(pages) == 3
    assert [len(page) for page in pages] == [PAGE_SIZE, PAGE_SIZE, len(expected) - 2 * PAGE_SIZE]
    assert seen == expected
    assert len(set(seen)) == len(seen)


def test_an_exact_multiple_of_the_page_size_ends_without_an_empty_page(client, site, nurse):
    add_patients(PAGE_SIZE * 2, [site], nurse)
    client.force_login(nurse)

    pages = walk(client)

    assert [len(page) for page in pages] == [PAGE_SIZE, PAGE_SIZE]


def test_walking_search_results_keeps_the_search(client, site, nurse):
    for i in range(PAGE_SIZE + 4):
        PatientFactory(home_site=site, created_by=nurse, family_name=f"Hughes{i:02d}")
    for i in range(10):
        PatientFactory(home_site=site, created_by=nurse, family_name=f"Bennett{i:02d}")
    client.force_login(nurse)

    pages = walk(client, {"q": "hughes"})

    names = [patient.family_name for page in pages for patient in page]
    assert len(names) == PAGE_SIZE + 4
    assert all(name.startswith("Hughes") for name in names)


@pytest.fixture
def first_page(client, site, nurse):
    add_patients(PAGE_SIZE + 5, [site], nurse)
    client.force_login(nurse)
    response = client.get(reverse("patients:list"))
    return response.context["page"]


def tampered_cursors(cursor: str) -> list[str]:
    flipped = cursor[:-1] + ("A" if cursor[-1] != "A" else "B")
    return [
        flipped,
        "garbage",
        ":",
        cursor + "x",
        cursor.split(":", 1)[1] if ":" in cursor else "x",
        signing.dumps(["Zzz", "Zzz", 10**6], salt="another.salt"),
        signing.dumps(["Zzz", "Zzz"], salt="vigil.keyset"),
        signing.dumps({"family_name": "Zzz"}, salt="vigil.keyset"),
        "é" * 500,
    ]


def test_a_tampered_or_foreign_cursor_restarts_at_the_first_page(client, first_page):
    assert first_page.next_cursor
    first_ids = [patient.pk for patient in first_page.items]

    for cursor in tampered_cursors(first_page.next_cursor):
        response = client.get(reverse("patients:list"), {"after": cursor})
        assert response.status_code == 200, cursor
        page = response.context["page"]
        assert page.is_first, cursor
        assert [patient.pk for patient in page.items] == first_ids, cursor


def test_a_genuine_cursor_moves_to_the_next_page(client, first_page):
    response = client.get(reverse("patients:list"), {"after": first_page.next_cursor})
    page = response.context["page"]

    assert not page.is_first
    assert len(page.items) == 5
    assert not set(page.items) & set(first_page.items)


_site_numbers = itertools.count(1)


@hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    names=st.lists(
        st.tuples(
            st.sampled_from(["smith", "Smith", "SMITH", "Smíth", "Ó Briain", "o briain", "李", ""]),
            st.sampled_from(["ann", "Ann", "Zoë", "zoe", "a", ""]),
        ),
        min_size=0,
        max_size=25,
    ),
    size=st.integers(min_value=1, max_value=6),
)
def test_keyset_pages_cover_any_list_of_names_exactly_once_in_order(nurse, names, size):
    site = SiteFactory(name=f"Keyset site {next(_site_numbers)}")
    for family, given_name in names:
        PatientFactory(home_site=site, created_by=nurse, family_name=family, given_name=given_name)
    queryset = Patient.objects.filter(home_site=site)
    expected = list(queryset.order_by(*FIELDS).values_list("id", flat=True))

    seen, cursor = [], None
    for _ in range(len(names) + 2):
        page = keyset_page(queryset, fields=FIELDS, cursor=cursor, size=size)
        assert len(page.items) <= size
        seen.extend(patient.pk for patient in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break

    assert cursor is None
    assert seen == expected
