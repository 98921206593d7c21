"""The access log (SPEC §C3, §N6): every view of a patient's chart or record, every export and
every sign-in writes one row — who, what, which record, site, patient, path, address — and one
audit link; never a clinical value, never a query string. Refreshes of a page already open
(htmx partials) and form posts are not views.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlencode

import pytest
from django.core.files.base import ContentFile
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from audit.models import AccessLog, AuditEvent
from compliance.selectors import FIGURES
from followups import services as followup_services
from monitoring import services as monitoring_services
from patients.models import ConsentRecord
from tests.factories import ConsentRecordFactory, PatientFactory
from tests.followups.conftest import (
    approved_course,
    checked_in,
    consented,
    course,
    dosing,
    iv_protocol,
    ketamine_lot,
    ready,
    scheduled,
)
from tests.followups.helpers import NORMAL_VITALS

# Step 1 to 3 fixtures, reused: the records viewed are built through the real services.
__all__ = [
    "approved_course",
    "checked_in",
    "consented",
    "course",
    "dosing",
    "iv_protocol",
    "ketamine_lot",
    "ready",
    "scheduled",
]

pytestmark = pytest.mark.django_db

CLIENT_ADDRESS = "203.0.113.7"
SPOOFED_ADDRESS = "198.51.100.99"
PDF_SCAN = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"

# A patient and readings nobody could mistake for an id or a page name.
GIVEN, FAMILY, MRN = "Zebedee", "Quillfeather", "QX-424242"
BIRTH = date(1977, 3, 29)
BIRTH_FORMS = ("1977-03-29", "29/03/1977", "03/29/1977", "29 Mar 1977", "March 29, 1977")
TEMPERATURE = "38.4"
READING = {"sbp": 171, "dbp": 97, "hr": 113, "rr": 23, "spo2": 94, "moaas": 4}


@pytest.fixture
def patient(site, nurse):
    """The patient every fixture of this module treats (overrides tests/conftest.py)."""
    return PatientFactory(
        home_site=site,
        created_by=nurse,
        given_name=GIVEN,
        family_name=FAMILY,
        mrn=MRN,
        date_of_birth=BIRTH,
        phone="0113 496 0173",
    )


@pytest.fixture
def scanned_consent(settings, tmp_path, patient, nurse) -> ConsentRecord:
    settings.MEDIA_ROOT = tmp_path
    return ConsentRecordFactory(
        patient=patient,
        witness=nurse,
        signature_method=ConsentRecord.SignatureMethod.WET_SCANNED,
        scan=ContentFile(PDF_SCAN, name="scan.pdf"),
        scan_content_type="application/pdf",
    )


@pytest.fixture
def followup(approved_course, nurse):
    plan = followup_services.plan_from(
        course=approved_course, start=timezone.now(), acting_user=nurse
    )
    return next(f for f in plan if f.code == "next_day_call")


@pytest.fixture
def assessment(approved_course):
    return approved_course.assessments.get()


@pytest.fixture
def observed_session(dosing, nurse):
    """The dosing session with a reading of distinctive values."""
    monitoring_services.vitals_record(
        session=dosing, acting_user=nurse, temperature_c=TEMPERATURE, **READING
    )
    return dosing


def _newest(model) -> int:
    return model.objects.aggregate(newest=Max("pk"))["newest"] or 0


class Marks:
    """What the requests after it wrote to the access log and the audit chain."""

    def __init__(self) -> None:
        self.log, self.event = _newest(AccessLog), _newest(AuditEvent)

    def logs(self) -> list[AccessLog]:
        return list(AccessLog.objects.filter(pk__gt=self.log).order_by("pk"))

    def events(self) -> list[AuditEvent]:
        return list(AuditEvent.objects.filter(pk__gt=self.event).order_by("pk"))


def _read(response) -> None:
    """Stream a file or CSV to its end: the test client closes it there (closing it again
    would fire request_finished and close the test's database connection)."""
    if response.streaming:
        b"".join(response.streaming_content)


def assert_access_linked(log: AccessLog, events: list[AuditEvent], action: str) -> None:
    """One audit link for the access-log row, naming the same who, what and which record."""
    (event,) = [e for e in events if (e.source, e.source_id) == ("audit.accesslog", log.pk)]
    assert event.action == action
    assert event.occurred_at == log.at
    assert (event.user_id, event.site_id, event.patient_id) == (
        log.user_id,
        log.site_id,
        log.patient_id,
    )
    assert (event.object_type, event.object_id) == (log.object_type, log.object_id)
    assert event.reason == log.what


# --- Views of records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """A logged page: its URL name, the fixture of the record it shows, and who opens it."""

    name: str
    record: str
    what: str
    viewer: str
    kwargs: tuple[str, ...] = ()

    def url(self, record) -> str:
        if self.kwargs == ("object_type", "object_id"):
            return reverse(self.name, args=[record._meta.label_lower, record.pk])
        return reverse(self.name, args=[record.pk])


PAGES = [
    Page("patients:chart", "patient", "Patient chart", "nurse"),
    Page("patients:consent_scan", "scanned_consent", "Consent scan", "psychiatrist"),
    Page("protocols:assessment_detail", "assessment", "Assessment", "psychiatrist"),
    Page("monitoring:session", "observed_session", "Session", "anesthesiologist"),
    Page("monitoring:report", "observed_session", "Session report", "nurse"),
    Page("followups:complete", "followup", "Follow-up", "nurse"),
    Page(
        "audit:record",
        "patient",
        "Audit trail of a record",
        "administrator",
        kwargs=("object_type", "object_id"),
    ),
    Page(
        "audit:record",
        "observed_session",
        "Audit trail of a record",
        "administrator",
        ("object_type", "object_id"),
    ),
    Page("audit:patient", "patient", "Audit timeline of a patient", "administrator"),
]


def _scope(record, patient) -> tuple[int, int]:
    """(site, patient) of a viewed record: the session's site for a session, else the home site."""
    site_id = getattr(record, "site_id", None) or patient.home_site_id
    return site_id, patient.pk


# (Not named `page`: pytest-playwright owns that fixture name.)
@pytest.mark.parametrize("logged", [pytest.param(p, id=f"{p.name}-{p.record}") for p in PAGES])
def test_viewing_a_record_writes_one_access_log_row_and_one_audit_link(
    request, client, patient, logged
):
    record = request.getfixturevalue(logged.record)
    viewer = request.getfixturevalue(logged.viewer)
    client.force_login(viewer)
    url = logged.url(record)
    marks = Marks()

    response = client.get(
        f"{url}?{urlencode({'q': MRN, 'tab': 'vitals'})}",
        REMOTE_ADDR=CLIENT_ADDRESS,
        HTTP_X_FORWARDED_FOR=SPOOFED_ADDRESS,
    )

    assert response.status_code == 200
    _read(response)
    (log,) = marks.logs()
    assert log.user == viewer
    assert log.action == AccessLog.Action.VIEW
    assert log.what == logged.what
    assert (log.object_type, log.object_id) == (record._meta.label_lower, str(record.pk))
    assert (log.site_id, log.patient_id) == _scope(record, patient)
    assert log.path == url, "the path is kept without its query string"
    assert log.ip_address == CLIENT_ADDRESS, "the address is the one the server saw"
    # A view writes nothing but its access-log line: one link in the chain.
    events = marks.events()
    assert len(events) == 1
    assert_access_linked(log, events, "viewed")


def test_each_view_of_a_record_is_logged_again(client, nurse, patient):
    client.force_login(nurse)
    marks = Marks()

    for _ in range(3):
        client.get(reverse("patients:chart", args=[patient.pk]))

    assert [log.what for log in marks.logs()] == ["Patient chart"] * 3
    assert len(marks.events()) == 3


def test_refreshing_the_live_session_panel_is_not_logged(client, nurse, observed_session):
    client.force_login(nurse)
    marks = Marks()

    for headers in ({"HTTP_HX_REQUEST": "true"}, {}):
        response = client.get(
            reverse("monitoring:session_live", args=[observed_session.pk]), **headers
        )
        assert response.status_code == 200

    assert marks.logs() == []
    assert marks.events() == []


def test_refreshing_the_floor_board_is_not_logged(client, nurse, observed_session):
    client.force_login(nurse)
    marks = Marks()

    response = client.get(reverse("monitoring:floor"), HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    assert marks.logs() == []


def test_posting_a_follow_up_form_is_not_a_view(client, nurse, followup):
    client.force_login(nurse)
    marks = Marks()

    response = client.post(reverse("followups:complete", args=[followup.pk]), {"sbp": "high"})

    assert response.status_code == 200  # the form with its errors
    assert marks.logs() == []


def test_a_refused_view_of_another_sites_record_is_not_logged(client, outsider, patient):
    client.force_login(outsider)
    marks = Marks()

    response = client.get(reverse("patients:chart", args=[patient.pk]))

    assert response.status_code == 404
    assert marks.logs() == []


# --- Exports --------------------------------------------------------------------------------------


def _compliance_export(patient) -> tuple[str, str, None]:
    slug, figure = next(iter(FIGURES.items()))
    return (
        reverse("compliance:export", args=[slug]),
        f"Compliance export: {figure.title}",
        None,
    )


EXPORTS = {
    "register": lambda patient: (
        reverse("monitoring:register_csv"),
        "Controlled-substance register export",
        None,
    ),
    "audit": lambda patient: (reverse("audit:events_export"), "Audit trail export", None),
    "audit-record": lambda patient: (
        reverse("audit:record_export", args=["patients.patient", patient.pk]),
        "Audit trail export of a record",
        patient,
    ),
    "compliance": _compliance_export,
}


@pytest.mark.parametrize("export", list(EXPORTS))
def test_every_export_writes_one_access_log_row_marked_export(
    client, administrator, site, patient, observed_session, export
):
    url, what, record = EXPORTS[export](patient)
    client.force_login(administrator)
    marks = Marks()

    response = client.get(f"{url}?format=csv", REMOTE_ADDR=CLIENT_ADDRESS)

    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/csv")
    _read(response)
    (log,) = marks.logs()
    assert (log.user, log.action, log.what) == (administrator, AccessLog.Action.EXPORT, what)
    assert (log.path, log.ip_address) == (url, CLIENT_ADDRESS)
    if record is None:
        assert (log.object_type, log.object_id, log.patient_id) == ("", "", None)
        assert log.site_id == site.pk  # the administrator's current site
    else:
        assert (log.object_type, log.object_id) == ("patients.patient", str(patient.pk))
        assert (log.site_id, log.patient_id) == (patient.home_site_id, patient.pk)
    events = marks.events()
    assert len(events) == 1
    assert_access_linked(log, events, "exported")


# --- Sign-ins -------------------------------------------------------------------------------------


def test_signing_in_writes_one_access_log_row(client, nurse, password):
    marks = Marks()

    response = client.post(
        reverse("login"),
        {"username": nurse.username, "password": password},
        REMOTE_ADDR=CLIENT_ADDRESS,
    )

    assert response.status_code == 302
    (log,) = marks.logs()
    assert (log.user, log.action, log.what) == (nurse, AccessLog.Action.SIGN_IN, "Signed in")
    assert (log.path, log.ip_address) == (reverse("login"), CLIENT_ADDRESS)
    # The record is the account: administrators of the staff member's sites see the sign-in.
    assert (log.object_type, log.object_id, log.patient_id) == ("clinic.user", str(nurse.pk), None)
    events = marks.events()
    assert len(events) == 1
    assert_access_linked(log, events, "signed-in")


def test_a_failed_sign_in_writes_no_access_log_row(client, nurse):
    marks = Marks()

    response = client.post(reverse("login"), {"username": nurse.username, "password": "nope"})

    assert response.status_code == 200
    assert marks.logs() == []
    assert marks.events() == []


# --- No clinical values ---------------------------------------------------------------------------

IDENTIFYING = (GIVEN, FAMILY, MRN, "0113 496 0173", TEMPERATURE, *BIRTH_FORMS)
NUMBERS = re.compile(r"\d+(?:\.\d+)?")


def test_the_access_log_holds_no_names_record_numbers_birth_dates_or_vital_values(
    client, nurse, administrator, patient, scanned_consent, assessment, followup, observed_session
):
    """Every logged page is opened with a query string full of clinical values; no column of
    the access log, and no audit link of it, repeats any of them."""
    query = urlencode({"q": f"{GIVEN} {FAMILY}", "mrn": MRN, "dob": BIRTH.isoformat(), **READING})
    records = {
        "patient": patient,
        "scanned_consent": scanned_consent,
        "assessment": assessment,
        "followup": followup,
        "observed_session": observed_session,
    }
    marks = Marks()
    visited = []
    for page in PAGES:
        client.force_login(nurse if not page.name.startswith("audit:") else administrator)
        url = page.url(records[page.record])
        _read(client.get(f"{url}?{query}"))
        visited.append(url)
    client.force_login(administrator)
    for export in EXPORTS.values():
        url, _what, _record = export(patient)
        _read(client.get(f"{url}?{query}"))
        visited.append(url)

    views = [log for log in marks.logs() if log.action != AccessLog.Action.SIGN_IN]
    assert [log.path for log in views] == visited
    links = {e.source_id: e for e in marks.events() if e.source == "audit.accesslog"}
    vital_numbers = {str(v) for v in READING.values()} | {TEMPERATURE}
    for log in views:
        cells = [str(getattr(log, f.attname)) for f in AccessLog._meta.concrete_fields]
        cells.append(links[log.pk].reason)
        text = " | ".join(cells)
        for value in IDENTIFYING:
            assert value not in text, f"{value!r} in the access log: {text}"
        assert "?" not in log.path
        # Page names and record types carry no numbers; ids live in their own columns.
        assert not vital_numbers & set(NUMBERS.findall(f"{log.what} {log.object_type}"))


def test_recording_vitals_writes_no_access_log_row(client, nurse, dosing):
    """A write is not a view: its history row is its audit trail."""
    client.force_login(nurse)
    marks = Marks()

    monitoring_services.vitals_record(session=dosing, acting_user=nurse, **NORMAL_VITALS)

    assert marks.logs() == []


def test_a_follow_up_refused_to_the_role_is_not_logged_as_viewed(
    client, anesthesiologist, followup
):
    client.force_login(anesthesiologist)
    marks = Marks()

    response = client.get(reverse("followups:complete", args=[followup.pk]))

    assert response.status_code == 403
    assert marks.logs() == []
