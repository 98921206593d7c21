"""Query counts of the Step 2 pages do not grow with the data (SPEC §N3).

The session page, its htmx live part and the report run the same number of queries for 3
readings as for 40 (with their alerts, acknowledgements, corrections and observations); the floor
board runs the same number for 1 active session as for 15. Each page is also pinned to an upper
bound, so that a new per-page query is a deliberate change.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from monitoring import services
from monitoring.models import Alert, TreatmentSession
from patients import services as patient_services
from patients.models import ConsentKind
from protocols import services as protocol_services
from protocols.models import TreatmentCourse
from tests.factories import ConsentTemplateFactory, PatientFactory
from tests.protocols.conftest import complete_fields

pytestmark = pytest.mark.django_db

FEW_READINGS, MANY_READINGS = 3, 40
FEW_SESSIONS, MANY_SESSIONS = 1, 15

# Upper bounds, pinned to the counts measured when these tests were written (for a nurse; they
# include the navigation's badges, which the context processor computes for htmx partials too).
# Full pages also write their access-log row and its hash-chain link (SPEC §C3, §C4): insert the
# row, lock the chain head, read the row back as stored, insert the link, move the head.
ACCESS_LOG_WRITE = 5
# Checked in: the start gate also reads the open critical alerts (pre-dose alerts, SPEC §G3).
# Monitoring: the close gate also plans the recovery checks fallen due since the last write.
LIVE_PARTIAL_MAX = {"checked-in": 22, "dosing": 15, "monitoring": 19, "discharged": 22}
SESSION_PAGE_MAX = {phase: n + ACCESS_LOG_WRITE for phase, n in LIVE_PARTIAL_MAX.items()}
REPORT_MAX = {"monitoring": 20 + ACCESS_LOG_WRITE, "discharged": 23 + ACCESS_LOG_WRITE}
FLOOR_MAX = 10

NORMAL = {"sbp": 128, "dbp": 82, "hr": 74, "rr": 14, "spo2": 98, "moaas": 5}


def measured(client, url: str, headers: dict | None = None) -> tuple[int, bytes]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, headers=headers or {})
    assert response.status_code == 200
    return len(queries), response.content


def assert_constant(client, url: str, grow, bound: int, django_assert_max_num_queries):
    """Measure `url`, `grow()` the data, measure again: the same count, within `bound`."""
    client.get(url)  # warm per-process caches (content types) so both runs are alike
    few, _ = measured(client, url)
    grow()
    with django_assert_max_num_queries(bound):
        many, page = measured(client, url)
    assert many == few
    return page


def limit(session: TreatmentSession, level: str, field: str):
    """The protocol's alert rule `level` on `field` (a plain threshold, not a rise or a repeat)."""
    return next(
        r
        for r in session.rules.alerts
        if r.level == level
        and r.field == field
        and not r.over_baseline
        and not r.persistence_window_minutes
    )


def add_readings(session: TreatmentSession, count: int, *, nurse, supervisor) -> None:
    """`count` readings; after the dose, some raise warnings, some critical alerts (each
    acknowledged), one is marked entered in error; plus CADSS, a note and an adverse event."""
    session.refresh_from_db()
    warning = int(limit(session, "warning", "spo2").value) - 1
    critical = int(limit(session, "critical", "spo2").value) - 2
    for n in range(count):
        spo2 = critical if n % 13 == 12 else warning if n % 5 == 4 else NORMAL["spo2"]
        services.vitals_record(
            session=session,
            acting_user=nurse,
            **{**NORMAL, "spo2": spo2, "temperature_c": Decimal("36.8")},
        )
    first = session.vitals.order_by("-id").first()
    services.vitals_mark_error(reading=first, acting_user=nurse, reason="Wrong patient's monitor")
    for alert in session.alerts.filter(level=Alert.Level.CRITICAL, acknowledged_at__isnull=True):
        services.alert_acknowledge(alert=alert, acting_user=supervisor, action_taken="Oxygen 2 L")
    if session.status != TreatmentSession.Status.CHECKED_IN:
        services.observation_record(
            session=session, acting_user=nurse, kind="cadss", cadss_total=count % 20
        )
        services.observation_record(
            session=session, acting_user=nurse, kind="note", text="Calm, talking."
        )
        services.observation_record(
            session=session,
            acting_user=nurse,
            kind="adverse-event",
            event_type="Nausea",
            severity="mild",
            action="Ondansetron",
            outcome="Resolved",
        )


@pytest.fixture
def ketamine_template(nurse):
    return ConsentTemplateFactory(kind=ConsentKind.KETAMINE_TREATMENT, created_by=nurse)


@pytest.fixture
def start_session(
    site, nurse, psychiatrist, anesthesiologist, iv_protocol, ketamine_lot, ketamine_template
):
    """`start_session(phase)`: a new patient's session, approved and brought to `phase`."""
    chairs = iter(range(1, 100))

    def start(phase: str) -> TreatmentSession:
        patient = PatientFactory(home_site=site, created_by=nurse)
        patient_services.consent_record(
            patient=patient,
            template=ketamine_template,
            acting_user=nurse,
            signature_method="tablet",
        )
        course = protocol_services.course_start(
            patient=patient,
            protocol=iv_protocol,
            acting_user=nurse,
            indication=TreatmentCourse.Indication.TRD,
            responsible_psychiatrist=psychiatrist,
            planned_sessions=6,
        )
        draft = protocol_services.assessment_create(course=course, acting_user=nurse)
        protocol_services.assessment_update(
            assessment=draft, acting_user=nurse, **complete_fields(course)
        )
        protocol_services.assessment_submit(assessment=draft, acting_user=nurse)
        protocol_services.assessment_sign(
            assessment=draft,
            signer=psychiatrist,
            password="correct-horse-battery-staple",
            approve=True,
        )
        course.refresh_from_db()
        session = services.session_schedule(
            course=course,
            acting_user=nurse,
            scheduled_at=timezone.now(),
            chair=f"Chair {next(chairs)}",
            supervising_clinician=anesthesiologist,
        )
        services.session_check_in(
            session=session, acting_user=nurse, escort_confirmed=True, escort_details="Partner"
        )
        services.vitals_record(session=session, acting_user=nurse, **NORMAL)
        if phase != "checked-in":
            dose_mg = Decimal(patient.weight_kg) * Decimal("0.5")
            services.dose_record(
                session=session,
                acting_user=nurse,
                lot=ketamine_lot,
                dose_mg=dose_mg,
                volume_ml=dose_mg / ketamine_lot.concentration_mg_per_ml,
                started_at=timezone.now(),
                prescriber=psychiatrist,
            )
        if phase == "monitoring":
            services.dose_complete(session=session, acting_user=nurse, ended_at=timezone.now())
        session.refresh_from_db()
        return session

    return start


@pytest.mark.parametrize("phase", ["checked-in", "dosing", "monitoring"])
@pytest.mark.parametrize("url_name", ["monitoring:session", "monitoring:session_live"])
def test_the_session_page_runs_as_many_queries_for_40_readings_as_for_3(
    client, nurse, anesthesiologist, start_session, phase, url_name, django_assert_max_num_queries
):
    session = start_session(phase)
    add_readings(session, FEW_READINGS - 1, nurse=nurse, supervisor=anesthesiologist)
    client.force_login(nurse)
    url = reverse(url_name, kwargs={"session_id": session.pk})
    bound = (SESSION_PAGE_MAX if url_name == "monitoring:session" else LIVE_PARTIAL_MAX)[phase]

    page = assert_constant(
        client,
        url,
        lambda: add_readings(
            session, MANY_READINGS - FEW_READINGS, nurse=nurse, supervisor=anesthesiologist
        ),
        bound,
        django_assert_max_num_queries,
    )

    assert session.vitals.count() >= MANY_READINGS
    assert page.count(b'data-testid="reading"') == session.vitals.count()


def discharge(session: TreatmentSession, *, nurse, signer, time_machine) -> TreatmentSession:
    """Move past the minimum observation, excuse the checks not met, sign the discharge."""
    time_machine.move_to(
        session.dose_ended_at + timedelta(minutes=session.rules.minimum_observation_minutes + 1)
    )
    services.observation_record(session=session, acting_user=nurse, kind="cadss", cadss_total=0)
    for check in session.checks.required().filter(satisfied_at__isnull=True, due_at__isnull=False):
        services.check_excuse(check=check, acting_user=nurse, reason="Patient asleep")
    services.session_discharge(
        session=session,
        signer=signer,
        password="correct-horse-battery-staple",
        aldrete_activity=2,
        aldrete_respiration=2,
        aldrete_circulation=2,
        aldrete_consciousness=2,
        aldrete_spo2=2,
        moaas=5,
        escort_present=True,
        no_driving_instruction_given=True,
    )
    session.refresh_from_db()
    assert session.status == TreatmentSession.Status.DISCHARGED
    return session


@pytest.mark.parametrize(
    "url_name", ["monitoring:session", "monitoring:session_live", "monitoring:report"]
)
def test_a_discharged_session_shows_its_signature_with_as_many_queries_for_40_readings_as_for_3(
    client,
    nurse,
    anesthesiologist,
    start_session,
    url_name,
    time_machine,
    django_assert_max_num_queries,
):
    time_machine.move_to(timezone.now(), tick=False)
    few = start_session("monitoring")
    many = start_session("monitoring")
    add_readings(few, FEW_READINGS - 1, nurse=nurse, supervisor=anesthesiologist)
    add_readings(many, MANY_READINGS - 1, nurse=nurse, supervisor=anesthesiologist)
    for session in (few, many):
        discharge(session, nurse=nurse, signer=anesthesiologist, time_machine=time_machine)
    client.force_login(nurse)
    bound = {
        "monitoring:session": SESSION_PAGE_MAX["discharged"],
        "monitoring:session_live": LIVE_PARTIAL_MAX["discharged"],
        "monitoring:report": REPORT_MAX["discharged"],
    }[url_name]
    urls = [reverse(url_name, kwargs={"session_id": s.pk}) for s in (few, many)]

    client.get(urls[0])  # warm per-process caches
    few_count, _ = measured(client, urls[0])
    with django_assert_max_num_queries(bound):
        many_count, page = measured(client, urls[1])

    assert many_count == few_count
    if url_name != "monitoring:session_live":  # the signature sits above the live part
        assert page.count(b'data-testid="signature"') == 1
        assert b'data-testid="signature-invalid"' not in page


def test_the_report_runs_as_many_queries_for_40_readings_as_for_3(
    client, nurse, anesthesiologist, start_session, django_assert_max_num_queries
):
    session = start_session("monitoring")
    add_readings(session, FEW_READINGS - 1, nurse=nurse, supervisor=anesthesiologist)
    client.force_login(nurse)

    assert_constant(
        client,
        reverse("monitoring:report", kwargs={"session_id": session.pk}),
        lambda: add_readings(
            session, MANY_READINGS - FEW_READINGS, nurse=nurse, supervisor=anesthesiologist
        ),
        REPORT_MAX["monitoring"],
        django_assert_max_num_queries,
    )


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx-refresh"])
def test_the_floor_board_runs_as_many_queries_for_15_sessions_as_for_1(
    client, nurse, anesthesiologist, start_session, htmx, django_assert_max_num_queries
):
    phases = ["dosing", "monitoring", "checked-in"]
    first = start_session("dosing")
    add_readings(first, FEW_READINGS - 1, nurse=nurse, supervisor=anesthesiologist)
    client.force_login(nurse)
    headers = {"HX-Request": "true"} if htmx else {}
    url = reverse("monitoring:floor")

    def grow():
        for n in range(MANY_SESSIONS - FEW_SESSIONS):
            session = start_session(phases[n % len(phases)])
            add_readings(session, 2, nurse=nurse, supervisor=anesthesiologist)

    client.get(url, headers=headers)
    few, _ = measured(client, url, headers)
    grow()
    with django_assert_max_num_queries(FLOOR_MAX):
        many, page = measured(client, url, headers)

    assert many == few
    assert page.count(b'data-testid="floor-row"') == MANY_SESSIONS
    assert TreatmentSession.objects.active().count() == MANY_SESSIONS
