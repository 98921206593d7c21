"""The dashboard, drill-down lists and CSV exports as pages: access, paging, links, exports,
query counts and bad input (SPEC §C5, §N3, §N5)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.models import AccessLog
from compliance.forms import DATE_BOUNDS, NOT_YOUR_SITE, RANGE_TOO_LONG, START_AFTER_END
from compliance.selectors import FIGURES
from compliance.views import EXPORT_HEADER
from followups.models import FollowUp
from tests.compliance import builders as b
from tests.compliance.conftest import NOW, RANGE
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db


def _csv(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.reader(io.StringIO(body, newline="")))


@pytest.fixture
def now(time_machine):
    time_machine.move_to(NOW, tick=False)
    return NOW


# --- Access ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["compliance:dashboard", "compliance:list", "compliance:export"])
def test_only_holders_of_view_compliance_get_in(client, site, nurse, psychiatrist, name):
    args = [] if name == "compliance:dashboard" else ["discharges"]
    url = reverse(name, args=args)
    assert client.get(url)["Location"].startswith(reverse("login"))
    for user in (nurse, psychiatrist):
        client.force_login(user)
        assert client.get(url).status_code == 403


@pytest.mark.parametrize("name", ["compliance:dashboard", "compliance:list", "compliance:export"])
def test_a_site_that_is_not_the_administrators_answers_404(
    client, site, other_site, administrator, name
):
    args = [] if name == "compliance:dashboard" else ["discharges"]
    client.force_login(administrator)

    for site_id in (other_site.pk, 999_999, -1):
        response = client.get(reverse(name, args=args), {"site": site_id})
        assert response.status_code == 404


def test_an_unknown_figure_answers_404(client, site, administrator):
    client.force_login(administrator)

    assert client.get(reverse("compliance:list", args=["no-such-figure"])).status_code == 404
    assert client.get(reverse("compliance:export", args=["no-such-figure"])).status_code == 404


def test_an_administrator_of_two_sites_chooses_either(client, site, other_site, administrator):
    administrator.sites.add(other_site)
    client.force_login(administrator)

    response = client.get(reverse("compliance:dashboard"), {"site": other_site.pk})

    assert response.status_code == 200
    assert response.context["scope"].site == other_site
    assert "America/New_York" in response.content.decode()


# --- Lists ----------------------------------------------------------------------------------------


def test_each_list_row_links_to_its_record_and_its_audit_trail(client, world, administrator):
    client.force_login(administrator)

    response = client.get(
        reverse("compliance:list", args=["discharges"]), {"site": world.site.pk, **RANGE}
    )

    assert response.status_code == 200
    page = response.content.decode()
    for session_id in world.rows["discharges"]["violations"] | world.rows["discharges"]["ok"]:
        assert reverse("monitoring:session", kwargs={"session_id": session_id}) in page
        trail = reverse(
            "audit:record",
            kwargs={"object_type": "monitoring.treatmentsession", "object_id": session_id},
        )
        assert trail in page
    assert "Observed less than 60 min" in page
    assert [row.ok for row in response.context["rows"]] == [False] * 6 + [True] * 3


def test_the_list_of_invalid_signatures_links_to_the_signed_record(client, world, administrator):
    client.force_login(administrator)

    response = client.get(
        reverse("compliance:list", args=["signatures-invalid"]),
        {"site": world.site.pk, **RANGE},
    )

    page = response.content.decode()
    session = world.p1.s1
    assert reverse("monitoring:session", kwargs={"session_id": session.pk}) in page
    assert (
        reverse(
            "audit:record",
            kwargs={"object_type": "monitoring.treatmentsession", "object_id": session.pk},
        )
        in page
    )


def test_the_list_shows_only_violations_when_asked(client, world, administrator):
    client.force_login(administrator)

    response = client.get(
        reverse("compliance:list", args=["checks-on-time"]),
        {"site": world.site.pk, **RANGE, "show": "violations"},
    )

    assert {row.record_id for row in response.context["rows"]} == (
        world.rows["checks-on-time"]["violations"]
    )


def test_viewing_a_list_is_logged_without_clinical_values(client, world, administrator):
    client.force_login(administrator)

    client.get(reverse("compliance:list", args=["discharges"]), {"site": world.site.pk, **RANGE})

    (entry,) = AccessLog.objects.filter(user=administrator, what__startswith="Compliance")
    assert entry.action == AccessLog.Action.VIEW
    assert entry.what == f"Compliance list: {FIGURES['discharges'].title}"
    assert "?" not in entry.path


@pytest.fixture
def many_followups(site, nurse, now):
    """60 follow-ups due in the range: 20 missed, 40 completed in their window."""
    patient = PatientFactory(home_site=site, created_by=nurse)
    rows = {"ok": set(), "violations": set()}
    for i in range(60):
        due = b.at(3) + timedelta(hours=3 * i)
        if i % 3 == 0:
            row = b.followup(
                site=site, patient=patient, due_at=due, state="missed", reason="No answer"
            )
            rows["violations"].add(row.pk)
        else:
            row = b.followup(
                site=site,
                patient=patient,
                due_at=due,
                completed_at=due + timedelta(hours=1),
                completed_by=nurse,
            )
            rows["ok"].add(row.pk)
    return rows


def test_lists_page_by_50_violations_first_without_counting_everything(
    client, site, administrator, many_followups
):
    client.force_login(administrator)
    url = reverse("compliance:list", args=["followups-in-window"])

    first = client.get(url, {"site": site.pk, **RANGE})
    cursor = first.context["page"].next_cursor
    second = client.get(url, {"site": site.pk, **RANGE, "after": cursor})

    one = [row.record_id for row in first.context["rows"]]
    two = [row.record_id for row in second.context["rows"]]
    assert len(one) == 50 and len(two) == 10
    assert set(one) | set(two) == many_followups["ok"] | many_followups["violations"]
    assert set(one[:20]) == many_followups["violations"]
    assert second.context["page"].next_cursor is None
    assert 'data-testid="next-page"' in first.content.decode()


def test_a_tampered_cursor_starts_again_at_the_first_page(
    client, site, administrator, many_followups
):
    client.force_login(administrator)

    response = client.get(
        reverse("compliance:list", args=["followups-in-window"]),
        {"site": site.pk, **RANGE, "after": "not-a-cursor"},
    )

    assert response.status_code == 200
    assert response.context["page"].is_first


# --- CSV --------------------------------------------------------------------------------------


INJECTIONS = {
    "=1+1": "'=1+1",
    "+41 79 000 00 00": "'+41 79 000 00 00",
    "-2+3": "'-2+3",
    "@SUM(A1:A9)": "'@SUM(A1:A9)",
    "\tcmd": "'\tcmd",
    '"Quoted", with a comma\nand a second line': '"Quoted", with a comma\nand a second line',
}


def test_the_export_neutralizes_formulas_and_quotes_cells(client, site, nurse, administrator, now):
    patient = PatientFactory(home_site=site, created_by=nurse, mrn="=MRN()")
    for i, reason in enumerate(INJECTIONS):
        b.followup(
            site=site,
            patient=patient,
            due_at=b.at(4 + i),
            state=FollowUp.State.MISSED,
            reason=reason,
        )
    client.force_login(administrator)

    response = client.get(
        reverse("compliance:export", args=["followups-in-window"]), {"site": site.pk, **RANGE}
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response["Content-Disposition"]
    header, *rows = _csv(response)
    assert tuple(header) == EXPORT_HEADER
    reasons = {row[header.index("reason")] for row in rows}
    assert reasons == {f"Missed: {text}" for text in INJECTIONS}  # "Missed: " leads: safe
    assert {row[header.index("patient record number")] for row in rows} == {"'=MRN()"}
    assert {row[header.index("outcome")] for row in rows} == {"violation"}
    assert {row[header.index("date-time (site time)")][-6:] for row in rows} == {"+00:00"}


def test_cells_that_start_with_a_formula_character_get_an_apostrophe(
    client, site, nurse, administrator, now
):
    """The excused check's reason is written by staff; its cell starts with 'Excused: '. The
    incident description and the finding detail start a cell on their own: neutralized."""
    from monitoring.models import Incident

    for text in INJECTIONS:
        Incident.objects.create(
            site=site,
            kind=Incident.Kind.CS_DISCREPANCY,
            description=text,
            opened_at=b.at(5),
            opened_by=nurse,
        )
    client.force_login(administrator)

    response = client.get(
        reverse("compliance:export", args=["cs-discrepancies"]), {"site": site.pk, **RANGE}
    )

    header, *rows = _csv(response)
    assert sorted(row[header.index("reason")] for row in rows) == sorted(INJECTIONS.values())


def test_an_export_writes_one_access_log_row(client, world, administrator):
    client.force_login(administrator)
    before = AccessLog.objects.count()  # logging in is logged too

    response = client.get(
        reverse("compliance:export", args=["discharges"]), {"site": world.site.pk, **RANGE}
    )
    header, *rows = _csv(response)

    assert AccessLog.objects.count() == before + 1
    entry = AccessLog.objects.latest("pk")
    assert (entry.user, entry.action) == (administrator, AccessLog.Action.EXPORT)
    assert entry.what == f"Compliance export: {FIGURES['discharges'].title}"
    assert {int(row[header.index("record id")]) for row in rows} == (
        world.rows["discharges"]["ok"] | world.rows["discharges"]["violations"]
    )
    assert [row[header.index("outcome")] for row in rows] == ["violation"] * 6 + ["compliant"] * 3


def test_the_export_of_violations_only(client, world, administrator):
    client.force_login(administrator)

    response = client.get(
        reverse("compliance:export", args=["consent-at-dosing"]),
        {"site": world.site.pk, **RANGE, "show": "violations"},
    )

    header, *rows = _csv(response)
    assert {int(row[header.index("record id")]) for row in rows} == (
        world.rows["consent-at-dosing"]["violations"]
    )


# --- Query counts -----------------------------------------------------------------------------


def _clinic(site, *, sessions: int, versions, templates, nurse, psychiatrist, anesthesiologist):
    """`sessions` discharged sessions with a check, an acknowledged alert and a follow-up each,
    alternating IV ketamine and esketamine (with its REMS form)."""
    staff = {"psychiatrist": psychiatrist, "nurse": nurse}
    for i in range(sessions):
        esketamine = i % 2
        patient = PatientFactory(home_site=site, created_by=nurse)
        b.consent(
            patient,
            templates.e1 if esketamine else templates.k1,
            b.at(1, 9, month=2),
            witness=nurse,
        )
        course = b.course(patient, versions.esk if esketamine else versions.iv, **staff)
        b.sign_assessment(course, b.at(1, 9, month=2), **staff)
        built = b.SessionBuilder(course, b.at(3 + i % 14), supervisor=anesthesiologist, nurse=nurse)
        built.check(10, satisfied_minute=10)
        built.reading(10)
        built.alert(20, acknowledged_after=i % 7)
        session = built.discharge(130)
        b.followup(site=site, session=session, due_at=session.discharged_at + timedelta(days=1))
        if esketamine:
            b.rems_form(session, completed_at=None, administrator=nurse)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("compliance:dashboard", []),
        ("compliance:list", ["discharges"]),
        ("compliance:list", ["checks-on-time"]),
        ("compliance:export", ["critical-alerts"]),
    ],
)
def test_query_counts_do_not_grow_with_the_number_of_sessions(
    client,
    site,
    other_site,
    administrator,
    nurse,
    psychiatrist,
    anesthesiologist,
    versions,
    templates,
    now,
    name,
    args,
):
    client.force_login(administrator)
    url = reverse(name, args=args)
    people = {"nurse": nurse, "psychiatrist": psychiatrist, "anesthesiologist": anesthesiologist}
    counts = []
    for sessions in (2, 15):
        _clinic(site, sessions=sessions, versions=versions, templates=templates, **people)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, {"site": site.pk, **RANGE})
            assert response.status_code == 200
            if response.streaming:
                _csv(response)
        counts.append(len(queries))

    assert counts[0] == counts[1], counts


def test_the_dashboard_query_count_is_pinned(
    client,
    site,
    administrator,
    nurse,
    psychiatrist,
    anesthesiologist,
    versions,
    templates,
    now,
    django_assert_max_num_queries,
):
    _clinic(
        site,
        sessions=15,
        versions=versions,
        templates=templates,
        nurse=nurse,
        psychiatrist=psychiatrist,
        anesthesiologist=anesthesiologist,
    )
    client.force_login(administrator)

    with django_assert_max_num_queries(35):
        client.get(reverse("compliance:dashboard"), {"site": site.pk, **RANGE})


# --- Bad input --------------------------------------------------------------------------------


BAD_INPUT = [
    ({"start": "2025-02-30", "end": "2025-03-16"}, "start", "Enter a valid date."),
    ({"start": "yesterday", "end": "2025-03-16"}, "start", "Enter a valid date."),
    ({"start": "2025-03-16", "end": "2025-03-03"}, "end", START_AFTER_END),
    ({"start": "2024-01-01", "end": "2025-03-16"}, "start", RANGE_TOO_LONG),
    ({"start": "1899-12-31", "end": "1900-01-01"}, "start", DATE_BOUNDS),
    ({"start": "9999-12-31", "end": "9999-12-31"}, "start", DATE_BOUNDS),
    ({"start": "", "end": "2025-03-16"}, "start", "This field is required."),
    ({"site": "north"}, "site", NOT_YOUR_SITE),
]


@pytest.mark.parametrize(
    ("name", "params", "field", "message"),
    [
        *(("compliance:dashboard", *case) for case in BAD_INPUT),
        *(("compliance:list", *case) for case in BAD_INPUT),
        ("compliance:list", {"show": "everything"}, "show", None),
    ],
)
def test_bad_input_gets_field_errors_never_a_server_error(
    client, site, administrator, name, params, field, message
):
    client.force_login(administrator)
    args = [] if name == "compliance:dashboard" else ["discharges"]

    response = client.get(reverse(name, args=args), params)

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors
    if message:
        assert message in errors[field]
    assert "board" not in response.context and "page" not in response.context


def test_a_366_day_range_is_accepted_and_367_is_not(client, site, administrator):
    client.force_login(administrator)
    url = reverse("compliance:dashboard")

    assert client.get(url, {"start": "2024-01-01", "end": "2024-12-31"}).context["form"].is_valid()
    refused = client.get(url, {"start": "2024-01-01", "end": "2025-01-01"})
    assert RANGE_TOO_LONG in refused.context["form"].errors["start"]


def test_an_export_with_bad_dates_is_refused_with_the_errors(client, site, administrator):
    client.force_login(administrator)

    response = client.get(
        reverse("compliance:export", args=["discharges"]), {"start": "2025-03-16", "end": "x"}
    )

    assert response.status_code == 400
    assert "end" in response.context["form"].errors
    assert not AccessLog.objects.filter(action=AccessLog.Action.EXPORT).exists()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    start=st.one_of(st.text(max_size=12), st.dates().map(str)),
    end=st.one_of(st.text(max_size=12), st.dates().map(str)),
    show=st.text(max_size=10),
    site_text=st.text(alphabet=st.characters(categories=["L", "P", "Zs"]), max_size=6),
)
def test_any_query_string_gets_a_page_never_a_server_error(
    client, site, administrator, start, end, show, site_text
):
    client.force_login(administrator)
    params = {"start": start, "end": end, "show": show, "site": site_text}

    for url in (reverse("compliance:dashboard"), reverse("compliance:list", args=["rems-forms"])):
        response = client.get(url, params)
        assert response.status_code == 200
        form = response.context["form"]
        assert form.is_valid() or form.errors


def test_times_are_shown_in_the_chosen_sites_time_zone(
    client, site, other_site, administrator, nurse, now
):
    """The administrator's current site is London; Harbour's records show New York time."""
    administrator.sites.add(other_site)
    patient = PatientFactory(home_site=other_site, created_by=nurse)
    row = b.followup(
        site=other_site, patient=patient, due_at=b.at(5, 15), state="missed", reason="Away"
    )
    client.force_login(administrator)
    params = {"site": other_site.pk, **RANGE}

    page = client.get(reverse("compliance:list", args=["followups-in-window"]), params)
    export = client.get(reverse("compliance:export", args=["followups-in-window"]), params)

    assert "5 Mar 2025 10:00 -0500" in page.content.decode()
    header, *rows = _csv(export)
    assert [r[header.index("date-time (site time)")] for r in rows] == ["2025-03-05T10:00:00-05:00"]
    assert [int(r[header.index("record id")]) for r in rows] == [row.pk]
