"""The audit viewer (SPEC §C6, §U, §N3, §N5): filters, keyset pages, field-level diffs, record
trails, signatures, scoping, the CSV export and query counts.

Expected results are computed here from the `AuditEvent` table with plain filters, not through
`audit.selectors`: an administrator reads the events of their sites plus the clinic-wide ones
(no site), newest first by (occurred_at, id).
"""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.db.models import Q
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import views as audit_views
from audit.forms import DATE_RANGE, START_AFTER_END
from audit.models import AccessLog, AuditEvent, Finding, VerificationRun
from audit.selectors import Change
from clinic.models import Role, Site, User
from clinic.services import attribute
from monitoring import services as monitoring_services
from patients import services as patient_services
from patients.models import ConsentKind, Patient
from protocols import services as protocol_services
from tests.factories import ConsentTemplateFactory, PatientFactory, SiteFactory, UserFactory
from tests.followups.conftest import (
    approved_course,
    checked_in,
    consented,
    course,
    iv_protocol,
    ketamine_lot,
    scheduled,
)
from tests.followups.helpers import (
    NORMAL_VITALS,
    discharge,
    ready_for_discharge,
    start_iv_session,
)
from tests.protocols.conftest import complete_draft, draft, submitted

# Step 1 to 3 fixtures, reused: the audited records are built through the real services.
__all__ = [
    "approved_course",
    "checked_in",
    "complete_draft",
    "consented",
    "course",
    "draft",
    "iv_protocol",
    "ketamine_lot",
    "scheduled",
    "submitted",
]

pytestmark = pytest.mark.django_db

NEWEST_FIRST = ("-occurred_at", "-id")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = 12


# --- Helpers ------------------------------------------------------------------------------------


def visible_to(*sites: Site):
    """The events an administrator of `sites` may read: those of their sites, the clinic-wide
    ones (protocols, consent templates), and those about the staff accounts of their sites
    (changes, sign-ins) but not about other sites' staff (SPEC §U)."""
    staff = {str(pk) for pk in User.objects.filter(sites__in=sites).values_list("pk", flat=True)}
    return AuditEvent.objects.filter(
        Q(site_id__in=[s.pk for s in sites])
        | (Q(site__isnull=True) & ~Q(object_type="clinic.user"))
        | Q(site__isnull=True, object_type="clinic.user", object_id__in=staff)
    ).order_by(*NEWEST_FIRST)


def walk(client: Client, url: str, params: dict | None = None) -> list[int]:
    """Every event id of a paged audit list, following the keyset cursor page by page."""
    ids: list[int] = []
    cursor = None
    for _ in range(200):
        query = {**(params or {}), **({"after": cursor} if cursor else {})}
        response = client.get(url, query)
        assert response.status_code == 200
        ids += [row.event.pk for row in response.context["rows"]]
        cursor = response.context["page"].next_cursor
        if cursor is None:
            return ids
    raise AssertionError("the pages never end")


def register(site: Site, by, **fields) -> Patient:
    defaults = {
        "mrn": f"V-{Patient.objects.count() + 1:05d}",
        "given_name": "Ann",
        "family_name": "Ito",
        "date_of_birth": date(1980, 1, 2),
        "sex": Patient.Sex.FEMALE,
    }
    return patient_services.patient_register(site=site, acting_user=by, **{**defaults, **fields})


def export_rows(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert all(len(row) == CSV_COLUMNS for row in rows), "a cell broke out of its row"
    return rows


@pytest.fixture
def second_site(administrator, site) -> Site:
    """A second site of the administrator, with a nurse of its own."""
    second = SiteFactory(name="Riverside", time_zone="Europe/London")
    administrator.sites.add(second)
    return second


@pytest.fixture
def town(site, second_site, other_site, nurse, psychiatrist, outsider, administrator):
    """Changes at both of the administrator's sites, at another site and clinic-wide."""
    riverside_nurse = UserFactory(username="riverside", roles=[Role.NURSE], sites=[second_site])
    own = register(site, nurse, given_name="Ann")
    patient_services.patient_update(patient=own, acting_user=psychiatrist, phone="0113 496 0000")
    second = register(second_site, riverside_nurse, given_name="Bea")
    elsewhere = register(other_site, outsider, given_name="Cyd")
    template = patient_services.consent_template_create(
        acting_user=administrator,
        kind=ConsentKind.DATA_SHARING,
        title="Data sharing",
        text="Your GP gets a letter.",
    )
    return SimpleNamespace(
        own=own,
        second=second,
        elsewhere=elsewhere,
        template=template,
        riverside_nurse=riverside_nurse,
    )


# --- Filters --------------------------------------------------------------------------------------


def test_the_event_list_shows_the_administrators_sites_and_clinic_wide_events(
    client, administrator, site, second_site, town
):
    client.force_login(administrator)

    shown = walk(client, reverse("audit:events"))

    assert shown == list(visible_to(site, second_site).values_list("pk", flat=True))
    elsewhere = AuditEvent.objects.filter(patient_id=town.elsewhere.pk)
    assert elsewhere.exists()
    assert not set(shown) & set(elsewhere.values_list("pk", flat=True))
    assert AuditEvent.objects.filter(object_type="patients.consenttemplate", pk__in=shown)


@pytest.mark.parametrize(
    ("params", "narrowing"),
    [
        pytest.param(
            lambda t: {"site": t.second_site.pk},
            lambda t: Q(site_id=t.second_site.pk),
            id="site",
        ),
        pytest.param(
            lambda t: {"user": t.psychiatrist.pk}, lambda t: Q(user_id=t.psychiatrist.pk), id="user"
        ),
        pytest.param(
            lambda t: {"object_type": "patients.patient"},
            lambda t: Q(object_type="patients.patient"),
            id="object_type",
        ),
        pytest.param(lambda t: {"action": "changed"}, lambda t: Q(action="changed"), id="action"),
        pytest.param(
            lambda t: {"site": t.site.pk, "object_type": "patients.patient", "action": "created"},
            lambda t: Q(site_id=t.site.pk, object_type="patients.patient", action="created"),
            id="combined",
        ),
    ],
)
def test_each_filter_narrows_the_list_to_the_matching_events(
    client, administrator, site, second_site, psychiatrist, town, params, narrowing
):
    world = SimpleNamespace(site=site, second_site=second_site, psychiatrist=psychiatrist)
    client.force_login(administrator)

    shown = walk(client, reverse("audit:events"), params(world))

    expected = list(
        visible_to(site, second_site).filter(narrowing(world)).values_list("pk", flat=True)
    )
    assert expected, "the filter must match something for the test to mean anything"
    assert shown == expected
    assert len(shown) < len(visible_to(site, second_site))


def test_the_user_filter_shows_the_staff_members_changes_at_the_administrators_sites(
    client, administrator, site, second_site, town
):
    client.force_login(administrator)

    shown = walk(client, reverse("audit:events"), {"user": town.riverside_nurse.pk})

    events = AuditEvent.objects.filter(pk__in=shown)
    assert {e.user_id for e in events} == {town.riverside_nurse.pk}
    assert events.filter(patient_id=town.second.pk, action="created").exists()


@pytest.fixture
def auckland(db) -> SimpleNamespace:
    """A site twelve or thirteen hours ahead of UTC, its administrator and nurse."""
    site = SiteFactory(name="Auckland", time_zone="Pacific/Auckland")
    return SimpleNamespace(
        site=site,
        administrator=UserFactory(username="akl-admin", roles=[Role.ADMINISTRATOR], sites=[site]),
        nurse=UserFactory(username="akl-nurse", roles=[Role.NURSE], sites=[site]),
    )


def _registered_at(auckland, instants: list[datetime], time_machine) -> list[int]:
    ids = []
    for n, instant in enumerate(instants):
        time_machine.move_to(instant, tick=False)
        patient = register(auckland.site, auckland.nurse, mrn=f"AKL-{n}")
        ids.append(AuditEvent.objects.get(object_type="patients.patient", object_id=patient.pk).pk)
    return ids


def test_the_date_range_is_read_in_the_sites_time_zone(client, auckland, time_machine):
    _before, first, last, _after = _registered_at(
        auckland,
        [
            datetime(2025, 6, 30, 11, 59, tzinfo=UTC),  # 23:59 NZST on 30 June
            datetime(2025, 6, 30, 12, 0, tzinfo=UTC),  # 00:00 NZST on 1 July
            datetime(2025, 7, 1, 11, 59, tzinfo=UTC),  # 23:59 NZST on 1 July
            datetime(2025, 7, 1, 12, 0, tzinfo=UTC),  # 00:00 NZST on 2 July
        ],
        time_machine,
    )
    time_machine.move_to(datetime(2025, 7, 3, tzinfo=UTC), tick=False)
    client.force_login(auckland.administrator)

    response = client.get(
        reverse("audit:events"),
        {"start": "2025-07-01", "end": "2025-07-01", "object_type": "patients.patient"},
    )

    assert response.status_code == 200
    assert [row.event.pk for row in response.context["rows"]] == [last, first]
    # Times are shown in the site's time zone, with its abbreviation.
    assert "00:00:00 NZST" in response.content.decode()


def test_a_date_range_over_a_daylight_saving_change_keeps_to_the_local_day(
    client, auckland, time_machine
):
    # New Zealand summer time starts at 02:00 on 28 September 2025: that day lasts 23 hours.
    _before, first, last, _after = _registered_at(
        auckland,
        [
            datetime(2025, 9, 27, 11, 59, tzinfo=UTC),  # 23:59 NZST on the 27th
            datetime(2025, 9, 27, 12, 0, tzinfo=UTC),  # 00:00 NZST on the 28th
            datetime(2025, 9, 28, 10, 59, tzinfo=UTC),  # 23:59 NZDT on the 28th
            datetime(2025, 9, 28, 11, 0, tzinfo=UTC),  # 00:00 NZDT on the 29th
        ],
        time_machine,
    )
    time_machine.move_to(datetime(2025, 10, 1, tzinfo=UTC), tick=False)
    client.force_login(auckland.administrator)

    shown = walk(
        client,
        reverse("audit:events"),
        {"start": "2025-09-28", "end": "2025-09-28", "object_type": "patients.patient"},
    )

    assert shown == [last, first]


# --- Bad filter input (SPEC §N5) ------------------------------------------------------------------

BAD_FILTERS = [
    pytest.param(lambda w: {"start": "2024-13-45"}, "start", id="impossible-date"),
    pytest.param(lambda w: {"start": "yesterday"}, "start", id="words"),
    pytest.param(lambda w: {"end": "31/02/2024"}, "end", id="31-february"),
    pytest.param(lambda w: {"start": "0001-01-01"}, "start", id="year-1"),
    pytest.param(lambda w: {"end": "2101-01-01"}, "end", id="year-2101"),
    pytest.param(lambda w: {"start": "9" * 40}, "start", id="long-number"),
    pytest.param(
        lambda w: {"start": "2025-03-10", "end": "2025-03-01"}, "end", id="start-after-end"
    ),
    pytest.param(lambda w: {"site": w.other_site.pk}, "site", id="another-sites-id"),
    pytest.param(lambda w: {"site": "999999999"}, "site", id="unknown-site"),
    pytest.param(lambda w: {"site": "9" * 30}, "site", id="site-beyond-bigint"),
    pytest.param(lambda w: {"site": "abc"}, "site", id="site-not-a-number"),
    pytest.param(lambda w: {"site": "1\x00"}, "site", id="site-nul"),
    pytest.param(lambda w: {"user": w.outsider.pk}, "user", id="staff-of-another-site"),
    pytest.param(lambda w: {"user": "-1"}, "user", id="negative-user"),
    pytest.param(lambda w: {"user": "x' OR 1=1 --"}, "user", id="user-injection"),
    pytest.param(lambda w: {"object_type": "auth.group"}, "object_type", id="untracked-type"),
    pytest.param(lambda w: {"object_type": "clinic.signature"}, "object_type", id="signature"),
    pytest.param(lambda w: {"object_type": "<script>"}, "object_type", id="markup"),
    pytest.param(lambda w: {"action": "deleted-all"}, "action", id="unknown-action"),
    pytest.param(lambda w: {"action": "\x00"}, "action", id="nul-action"),
]


@pytest.mark.parametrize(("params", "field"), BAD_FILTERS)
def test_bad_filter_input_gets_a_field_error_and_no_events(
    client, administrator, other_site, outsider, town, params, field
):
    client.force_login(administrator)

    response = client.get(
        reverse("audit:events"), params(SimpleNamespace(other_site=other_site, outsider=outsider))
    )

    assert response.status_code == 200
    form = response.context["form"]
    assert field in form.errors
    assert response.context["rows"] == []
    content = response.content.decode()
    assert f'id="id_{field}-error"' in content, "the error is shown under its field"
    assert html.escape(form.errors[field][0], quote=False) in content


def test_the_date_errors_say_what_is_wrong(client, administrator):
    client.force_login(administrator)

    early = client.get(reverse("audit:events"), {"start": "1999-12-31"}).context["form"]
    reversed_range = client.get(
        reverse("audit:events"), {"start": "2025-03-10", "end": "2025-03-01"}
    ).context["form"]

    assert early.errors["start"] == [DATE_RANGE]
    assert reversed_range.errors["end"] == [START_AFTER_END]


@pytest.mark.parametrize(("params", "field"), BAD_FILTERS)
def test_bad_filter_input_to_the_export_gets_the_form_back_and_exports_nothing(
    client, administrator, other_site, outsider, params, field
):
    client.force_login(administrator)
    logged = AccessLog.objects.count()

    response = client.get(
        reverse("audit:events_export"),
        params(SimpleNamespace(other_site=other_site, outsider=outsider)),
    )

    assert response.status_code == 400
    assert not response.streaming
    assert field in response.context["form"].errors
    assert AccessLog.objects.count() == logged, "nothing was exported, nothing is logged"


@pytest.mark.parametrize("cursor", ["garbage", "", "a:b:c", "W10:1t:" + "x" * 40, "\x00"])
def test_a_tampered_or_foreign_cursor_starts_again_at_the_first_page(
    client, administrator, town, cursor
):
    client.force_login(administrator)
    first = client.get(reverse("audit:events")).context["rows"]

    response = client.get(reverse("audit:events"), {"after": cursor})

    assert response.status_code == 200
    assert [r.event.pk for r in response.context["rows"]] == [r.event.pk for r in first]


FILTER_NAMES = ("site", "start", "end", "user", "object_type", "action", "after")
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
QUERIES = st.dictionaries(st.sampled_from(FILTER_NAMES), TEXT | st.integers().map(str))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=QUERIES)
def test_no_filter_input_makes_the_viewer_or_its_export_fail(client, administrator, query):
    client.force_login(administrator)

    listing = client.get(reverse("audit:events"), query)
    export = client.get(reverse("audit:events_export"), query)

    assert listing.status_code == 200
    form = listing.context["form"]
    assert set(form.errors) <= set(FILTER_NAMES) - {"after"}
    if form.errors:
        assert listing.context["rows"] == []
        assert export.status_code == 400
    else:
        export_rows(export)


# --- Keyset pages ---------------------------------------------------------------------------------


def test_keyset_pages_show_every_event_once_in_order_across_ties(
    client, administrator, site, nurse, psychiatrist, time_machine
):
    """120 changes at only two instants: page boundaries fall inside runs of equal times."""
    patient = register(site, nurse)
    for instant in (datetime(2025, 5, 1, 9, tzinfo=UTC), datetime(2025, 5, 1, 10, tzinfo=UTC)):
        time_machine.move_to(instant, tick=False)
        for n in range(60):
            patient_services.patient_update(
                patient=patient, acting_user=psychiatrist, phone=f"0113 496 {instant.hour}{n:03d}"
            )
    time_machine.move_to(datetime(2025, 5, 2, tzinfo=UTC), tick=False)
    client.force_login(administrator)
    params = {"object_type": "patients.patient", "action": "changed"}

    shown = walk(client, reverse("audit:events"), params)

    expected = list(
        visible_to(site)
        .filter(object_type="patients.patient", action="changed")
        .values_list("pk", flat=True)
    )
    assert len(expected) == 120
    assert shown == expected, "no duplicates, no gaps, newest first"


def test_the_next_page_link_keeps_the_filters(client, administrator, site, nurse, psychiatrist):
    patient = register(site, nurse)
    for n in range(55):
        patient_services.patient_update(
            patient=patient, acting_user=psychiatrist, phone=f"0113 496 {n:04d}"
        )
    client.force_login(administrator)

    first = client.get(reverse("audit:events"), {"action": "changed", "site": site.pk})
    (link,) = re.findall(r'href="\?([^"]*)" rel="next"', first.content.decode())
    second = client.get(reverse("audit:events") + "?" + html.unescape(link))

    assert second.status_code == 200
    assert second.context["form"].cleaned_data["action"] == "changed"
    assert second.context["form"].cleaned_data["site"] == site
    rows = [row.event for row in second.context["rows"]]
    assert rows and all(e.action == "changed" and e.site_id == site.pk for e in rows)
    assert not {e.pk for e in rows} & {r.event.pk for r in first.context["rows"]}


# --- Record trails and field diffs ----------------------------------------------------------------


def test_the_record_trail_of_an_edited_patient_shows_each_field_old_and_new(
    client, administrator, site, nurse, psychiatrist
):
    patient = register(site, nurse, given_name="Ann", family_name="Ito")
    patient_services.patient_update(
        patient=patient, acting_user=psychiatrist, given_name="Anne", phone="0113 496 0000"
    )
    patient_services.patient_void(patient=patient, acting_user=nurse, reason="Duplicate")
    client.force_login(administrator)

    response = client.get(reverse("audit:record", args=["patients.patient", patient.pk]))

    assert response.status_code == 200
    rows = response.context["rows"]
    assert [r.event.action for r in rows] == ["created", "changed", "changed", "viewed"]
    created, edited, voided, viewed = rows
    assert Change("given name", "", "Ann") in created.changes
    assert edited.changes == [
        Change("given name", "Ann", "Anne"),
        Change("phone", "—", "0113 496 0000"),
    ]
    assert edited.event.user_id == psychiatrist.pk
    voided_changes = {c.field: (c.old, c.new) for c in voided.changes}
    assert voided_changes["voided by"] == ("—", nurse.printed_name), "staff are named"
    assert voided_changes["void reason"] == ("—", "Duplicate")
    assert set(voided_changes) == {"voided at", "voided by", "void reason"}
    assert viewed.access.what == "Audit trail of a record"
    content = response.content.decode()
    assert re.search(r"<del[^>]*>Ann</del>\s*→\s*<ins[^>]*>Anne</ins>", content)


def test_the_record_trail_of_a_session_includes_its_doses_readings_checks_and_discharge(
    client,
    administrator,
    approved_course,
    nurse,
    anesthesiologist,
    psychiatrist,
    ketamine_lot,
    password,
    time_machine,
):
    session = start_iv_session(
        approved_course,
        nurse=nurse,
        supervisor=anesthesiologist,
        prescriber=psychiatrist,
        lot=ketamine_lot,
        time_machine=time_machine,
    )
    session = ready_for_discharge(session, nurse=nurse, time_machine=time_machine)
    session = discharge(session, signer=anesthesiologist, password=password)
    client.force_login(administrator)
    url = reverse("audit:record", args=["monitoring.treatmentsession", session.pk])

    shown = AuditEvent.objects.filter(pk__in=walk(client, url))

    children = {
        "monitoring.treatmentsession": {session.pk},
        "monitoring.doseadministration": set(session.doses.values_list("pk", flat=True)),
        "monitoring.vitalreading": set(session.vitals.values_list("pk", flat=True)),
        "monitoring.requiredcheck": set(session.checks.values_list("pk", flat=True)),
        "monitoring.observation": set(session.observations.values_list("pk", flat=True)),
        "monitoring.discharge": {session.discharge.pk},
    }
    by_type: dict[str, set[int]] = {}
    for event in shown:
        by_type.setdefault(event.object_type, set()).add(int(event.object_id))
    assert len(children["monitoring.vitalreading"]) > 5
    assert by_type == children, "the session and every child row, nothing else"
    ordered = list(shown.order_by("occurred_at", "id").values_list("pk", flat=True))
    assert walk(client, url)[: len(ordered)] == ordered, "oldest first"
    assert shown.filter(source="clinic.signature", action="signed").count() == 1
    page = client.get(url).content.decode()
    assert "signature valid" in page
    assert "Discharged by" in page and anesthesiologist.printed_name in page


@pytest.fixture
def signed(submitted, psychiatrist, password):
    return protocol_services.assessment_sign(
        assessment=submitted, signer=psychiatrist, password=password, approve=True
    )


def _tamper(table: str, pk: int, column: str, value: str) -> None:
    """Change a signed row behind the application's back, past the database's guards."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [value, pk])  # noqa: S608
            cursor.execute("SET LOCAL session_replication_role = origin")
            return
        cursor.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
            [table],
        )
        triggers = cursor.fetchall()
        for name, _sql in triggers:
            cursor.execute(f'DROP TRIGGER "{name}"')
        cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [value, pk])  # noqa: S608
        for _name, sql in triggers:
            cursor.execute(sql)


def test_a_signature_over_a_record_changed_behind_the_apps_back_is_shown_invalid(
    client, administrator, signed
):
    client.force_login(administrator)
    url = reverse("audit:record", args=["protocols.assessment", signed.pk])
    before = client.get(url).content.decode()

    _tamper("protocols_assessment", signed.pk, "diagnosis", "Tampered diagnosis")
    after = client.get(url)

    assert "signature valid" in before and "signature invalid" not in before
    assert after.status_code == 200
    (state,) = after.context["signatures"]
    assert state.is_valid is False
    content = after.content.decode()
    assert "signature invalid" in content and "signature valid" not in content
    assert state.signature.printed_name in content


def test_the_patient_timeline_shows_every_record_of_the_patient_newest_first(
    client, administrator, approved_course, scheduled
):
    patient = approved_course.patient
    client.force_login(administrator)

    shown = walk(client, reverse("audit:patient", args=[patient.pk]))

    expected = visible_to(patient.home_site).filter(patient_id=patient.pk)
    assert shown == list(expected.values_list("pk", flat=True))
    kinds = set(AuditEvent.objects.filter(pk__in=shown).values_list("object_type", flat=True))
    assert {
        "patients.patient",
        "patients.consentrecord",
        "protocols.treatmentcourse",
        "protocols.assessment",
        "monitoring.treatmentsession",
    } <= kinds


def test_the_activity_page_shows_only_that_staff_members_events(
    client, administrator, site, second_site, town
):
    client.force_login(administrator)

    shown = walk(client, reverse("audit:user", args=[town.riverside_nurse.pk]))

    assert shown == list(
        visible_to(site, second_site)
        .filter(user_id=town.riverside_nurse.pk)
        .values_list("pk", flat=True)
    )


def test_a_verification_shows_the_findings_of_the_administrators_sites_and_clinic_wide(
    client, administrator, site, other_site
):
    now = timezone.now()
    run = VerificationRun.objects.create(
        started_at=now,
        finished_at=now,
        ok=False,
        chains=2,
        links=10,
        signatures=1,
        problems=3,
        triggered_by="test",
    )
    for where, detail in ((site, "own-site finding"), (other_site, "other-site finding")):
        Finding.objects.create(run=run, kind="row-altered", site=where, detail=detail)
    Finding.objects.create(run=run, kind="head-mismatch", detail="clinic-wide finding")
    client.force_login(administrator)

    listing = client.get(reverse("audit:verifications"))
    detail = client.get(reverse("audit:verification", args=[run.pk]))

    assert listing.status_code == 200 and run in listing.context["runs"]
    content = detail.content.decode()
    assert "own-site finding" in content and "clinic-wide finding" in content
    assert "other-site finding" not in content


# --- Scoping (SPEC §U) ----------------------------------------------------------------------------

OUT_OF_SCOPE = [
    pytest.param(
        lambda w: reverse("audit:record", args=["patients.patient", w.elsewhere.pk]), id="patient"
    ),
    pytest.param(
        lambda w: reverse("audit:record_export", args=["patients.patient", w.elsewhere.pk]),
        id="patient-export",
    ),
    pytest.param(lambda w: reverse("audit:patient", args=[w.elsewhere.pk]), id="timeline"),
    pytest.param(lambda w: reverse("audit:user", args=[w.outsider.pk]), id="staff"),
    pytest.param(
        lambda w: reverse("audit:record", args=["clinic.user", w.outsider.pk]), id="staff-record"
    ),
    pytest.param(
        lambda w: reverse("audit:record", args=["clinic.site", w.other_site.pk]), id="site"
    ),
]


@pytest.mark.parametrize("url", OUT_OF_SCOPE)
def test_records_outside_the_administrators_sites_answer_404(
    client, administrator, other_site, outsider, town, url
):
    client.force_login(administrator)
    world = SimpleNamespace(elsewhere=town.elsewhere, outsider=outsider, other_site=other_site)
    logged = AccessLog.objects.filter(action=AccessLog.Action.VIEW).count()

    response = client.get(url(world))

    assert response.status_code == 404
    assert AccessLog.objects.filter(action=AccessLog.Action.VIEW).count() == logged


@pytest.mark.parametrize(
    ("object_type", "object_id"),
    [
        ("clinic.signature", "1"),
        ("clinic.signaturefailure", "1"),
        ("auth.group", "1"),
        ("audit.auditevent", "1"),
        ("nonsense", "1"),
        ("patients.patient", "abc"),
        ("patients.patient", "-1"),
        ("patients.patient", "999999999"),
        ("patients.patient", "9" * 40),
        # str.isdigit() says yes to these; int() refuses the first and reads the second as 3.
        pytest.param("patients.patient", "²", id="superscript-two"),
        pytest.param("patients.patient", "٣", id="arabic-indic-three"),
    ],
)
def test_unknown_record_types_and_ids_answer_404(client, administrator, object_type, object_id):
    client = Client(raise_request_exception=False)
    client.force_login(administrator)

    response = client.get(reverse("audit:record", args=[object_type, object_id]))

    assert response.status_code == 404


AUDIT_URLS = [
    pytest.param(lambda p: reverse("audit:events"), id="events"),
    pytest.param(lambda p: reverse("audit:events_export"), id="export"),
    pytest.param(lambda p: reverse("audit:record", args=["patients.patient", p.pk]), id="record"),
    pytest.param(lambda p: reverse("audit:patient", args=[p.pk]), id="timeline"),
    pytest.param(lambda p: reverse("audit:user", args=[p.created_by_id]), id="activity"),
    pytest.param(lambda p: reverse("audit:verifications"), id="verifications"),
]


@pytest.mark.parametrize("role", ["nurse", "psychiatrist", "anesthesiologist", "gp"])
@pytest.mark.parametrize("url", AUDIT_URLS)
def test_other_roles_are_refused_the_audit_viewer(request, client, patient, role, url):
    client.force_login(request.getfixturevalue(role))
    logged = AccessLog.objects.exclude(action=AccessLog.Action.SIGN_IN).count()

    response = client.get(url(patient))

    assert response.status_code == 403
    assert AccessLog.objects.exclude(action=AccessLog.Action.SIGN_IN).count() == logged


@pytest.mark.parametrize("url", AUDIT_URLS)
def test_anonymous_visitors_are_sent_to_sign_in(client, patient, url):
    response = client.get(url(patient))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


def test_the_event_list_shows_own_staff_account_changes_and_hides_other_sites_staff(
    client, administrator, nurse, outsider
):
    client.force_login(administrator)

    shown = AuditEvent.objects.filter(pk__in=walk(client, reverse("audit:events")))

    assert shown.filter(object_type="clinic.user", object_id=str(nurse.pk)).exists()
    assert not shown.filter(object_type="clinic.user", object_id=str(outsider.pk)).exists()
    assert not shown.filter(user_id=outsider.pk).exists()


def test_the_event_list_shows_own_staff_sign_ins_and_hides_other_sites_staff(
    administrator, nurse, outsider, password
):
    for member in (nurse, outsider):
        Client().post(reverse("login"), {"username": member.username, "password": password})
    client = Client()
    client.force_login(administrator)

    shown = AuditEvent.objects.filter(pk__in=walk(client, reverse("audit:events")))

    assert shown.filter(action="signed-in", user_id=nurse.pk).exists()
    assert not shown.filter(action="signed-in", user_id=outsider.pk).exists()


# --- CSV export -----------------------------------------------------------------------------------


def _by_hash(rows: list[list[str]]) -> dict[str, list[str]]:
    header, *body = rows
    assert header[-1] == "link hash"
    return {row[-1]: row for row in body}


def test_the_export_neutralizes_cells_a_spreadsheet_would_run_as_formulas(client, administrator):
    """Names and reasons starting with =, +, -, @, tab or CR get a leading apostrophe.

    The rows are written with a plain save (attribute + save): the escaping is the export's,
    whatever path wrote the text.
    """
    planted = []
    for n, prefix in enumerate(FORMULA_PREFIXES):
        site = SiteFactory(name=f"{prefix}SUM(A1:A9) site {n}")
        actor = UserFactory(username=f"{prefix}cmd|' /C calc'!A{n}", sites=[site])
        administrator.sites.add(site)
        reason = f'{prefix}HYPERLINK("http://example.invalid","click {n}")'
        attribute(site, acting_user=actor, reason=reason)
        site.address = f"{n} Formula Street"
        site.save()
        event = AuditEvent.objects.get(object_type="clinic.site", object_id=site.pk, reason=reason)
        planted.append((event, actor.username, site.name, reason))
    client.force_login(administrator)

    rows = _by_hash(export_rows(client.get(reverse("audit:events_export"))))

    for event, username, site_name, reason in planted:
        row = rows[event.hash]
        assert row[2] == "'" + username
        assert row[3] == "'" + site_name
        assert row[7] == "'" + reason
    for row in rows.values():
        for cell in row:
            assert not cell.startswith(FORMULA_PREFIXES), f"unsafe cell {cell!r}"


def test_the_export_quotes_commas_quotes_and_line_breaks(client, administrator, site, nurse):
    patient = register(site, nurse, family_name='O"Hara, Jr')
    reason = 'Duplicate, see "the other" record\nregistered twice\r\nby mistake'
    patient_services.patient_void(patient=patient, acting_user=nurse, reason=reason)
    voided = AuditEvent.objects.get(
        object_type="patients.patient", object_id=patient.pk, action="changed"
    )
    created = AuditEvent.objects.get(
        object_type="patients.patient", object_id=patient.pk, action="created"
    )
    client.force_login(administrator)

    rows = _by_hash(export_rows(client.get(reverse("audit:events_export"))))

    assert rows[voided.hash][7] == f"Voided: {reason.strip()}"
    assert 'family name:  → O"Hara, Jr' in rows[created.hash][8]
    assert rows[voided.hash][:2] == [voided.occurred_at.astimezone(UTC).isoformat(), "Changed"]
    assert rows[voided.hash][2] == nurse.username
    assert rows[voided.hash][6] == str(patient.pk)


def test_the_export_follows_the_filters_and_the_administrators_sites(
    client, administrator, site, second_site, town
):
    client.force_login(administrator)

    rows = export_rows(
        client.get(reverse("audit:events_export"), {"site": second_site.pk, "action": "created"})
    )

    expected = visible_to(site, second_site).filter(site=second_site, action="created")
    assert list(_by_hash(rows)) == list(expected.values_list("hash", flat=True))
    assert {row[3] for row in rows[1:]} == {second_site.name}


def test_the_export_writes_every_event_once_in_order_across_batches(
    client, administrator, site, second_site, town, monkeypatch, time_machine
):
    # Small batches, and runs of equal times that straddle them.
    monkeypatch.setattr(audit_views, "EXPORT_BATCH", 7)
    time_machine.move_to(timezone.now() + timedelta(days=1), tick=False)
    for n in range(10):
        patient_services.patient_update(
            patient=town.own, acting_user=administrator, phone=f"0113 496 {n:04d}"
        )
    time_machine.move_to(timezone.now() + timedelta(days=1), tick=False)
    client.force_login(administrator)

    rows = export_rows(client.get(reverse("audit:events_export")))

    expected = list(visible_to(site, second_site).values_list("hash", flat=True))
    assert [row[-1] for row in rows[1:]] == expected


def test_the_export_is_itself_logged(client, administrator, site, town):
    client.force_login(administrator)
    before = AccessLog.objects.filter(action=AccessLog.Action.EXPORT).count()

    rows = export_rows(client.get(reverse("audit:events_export"), {"site": site.pk}))

    (log,) = AccessLog.objects.filter(action=AccessLog.Action.EXPORT).order_by("-pk")[:1]
    assert AccessLog.objects.filter(action=AccessLog.Action.EXPORT).count() == before + 1
    assert (log.user, log.what, log.path) == (
        administrator,
        "Audit trail export",
        reverse("audit:events_export"),
    )
    event = AuditEvent.objects.get(source="audit.accesslog", source_id=log.pk)
    assert event.action == "exported"
    # The export's own line is at the administrator's site: it is part of what it exports.
    assert event.hash in _by_hash(rows)


# --- Query counts (SPEC §N3) ----------------------------------------------------------------------

# Bounds for the pages below (as measured: session, user, sites, permissions, the access-log
# line and its chain link, the page, two queries per kind of history row shown, staff names,
# the navigation counts). Each page is measured with few and with many events and must cost the
# same: a query count that grows with the data is a failure.
MAX_LIST_QUERIES = 19
MAX_TIMELINE_QUERIES = 21
MAX_TRAIL_QUERIES = 28


def _patient_activity(client, patient, actor, rounds: int) -> None:
    """Events of several kinds for one patient: edits, consents and chart views."""
    template = ConsentTemplateFactory(kind=ConsentKind.KETAMINE_TREATMENT, created_by=actor)
    client.force_login(actor)
    for n in range(rounds):
        patient_services.patient_update(
            patient=patient, acting_user=actor, phone=f"0113 496 {n:04d}"
        )
        patient_services.consent_record(
            patient=patient, template=template, acting_user=actor, signature_method="tablet"
        )
        client.get(reverse("patients:chart", args=[patient.pk]))


@pytest.fixture
def few_and_many(client, site, nurse, psychiatrist):
    """Two patients of `site`: one with 3 rounds of activity (~10 events), one with 20 (~60),
    each by a psychiatrist of their own."""
    colleague = UserFactory(username="psychiatrist-two", roles=[Role.PSYCHIATRIST], sites=[site])
    few = PatientFactory(home_site=site, created_by=nurse)
    many = PatientFactory(home_site=site, created_by=nurse)
    _patient_activity(client, few, psychiatrist, 3)
    _patient_activity(client, many, colleague, 20)
    assert AuditEvent.objects.filter(patient_id=many.pk).count() > 60
    return SimpleNamespace(few=few, many=many, few_actor=psychiatrist, many_actor=colleague)


def _count(client, url, params, bound, django_assert_max_num_queries) -> int:
    client.get(url, params)  # warms per-process caches (content types), as any earlier page would
    with django_assert_max_num_queries(bound) as captured:
        response = client.get(url, params)
    assert response.status_code == 200
    return len(captured.captured_queries)


def test_the_event_list_costs_the_same_queries_for_few_and_many_events(
    client, administrator, site, few_and_many, django_assert_max_num_queries
):
    client.force_login(administrator)
    url = reverse("audit:events")

    few = _count(
        client,
        url,
        {"site": site.pk, "user": few_and_many.few_actor.pk},
        MAX_LIST_QUERIES,
        django_assert_max_num_queries,
    )
    many = _count(
        client,
        url,
        {"site": site.pk, "user": few_and_many.many_actor.pk},
        MAX_LIST_QUERIES,
        django_assert_max_num_queries,
    )

    assert few == many


def test_the_patient_timeline_costs_the_same_queries_for_few_and_many_events(
    client, administrator, few_and_many, django_assert_max_num_queries
):
    client.force_login(administrator)

    few, many = (
        _count(
            client,
            reverse("audit:patient", args=[patient.pk]),
            {},
            MAX_TIMELINE_QUERIES,
            django_assert_max_num_queries,
        )
        for patient in (few_and_many.few, few_and_many.many)
    )

    assert few == many


def test_the_record_trail_costs_the_same_queries_for_few_and_many_readings(
    client, administrator, approved_course, nurse, anesthesiologist, django_assert_max_num_queries
):
    sessions = []
    for readings in (2, 60):
        session = monitoring_services.session_schedule(
            course=approved_course,
            acting_user=nurse,
            scheduled_at=timezone.now(),
            chair="3",
            supervising_clinician=anesthesiologist,
        )
        monitoring_services.session_check_in(
            session=session, acting_user=nurse, escort_confirmed=True, escort_details="Taxi"
        )
        client.force_login(nurse)
        client.get(reverse("monitoring:session", args=[session.pk]))  # an early view
        for _ in range(readings):
            monitoring_services.vitals_record(session=session, acting_user=nurse, **NORMAL_VITALS)
        sessions.append(session)
    client.force_login(administrator)

    few, many = (
        _count(
            client,
            reverse("audit:record", args=["monitoring.treatmentsession", session.pk]),
            {},
            MAX_TRAIL_QUERIES,
            django_assert_max_num_queries,
        )
        for session in sessions
    )

    assert few == many
