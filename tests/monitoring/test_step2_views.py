"""Step 2 views (SPEC §M, §U, §N5): every monitoring URL's happy path, and who may not use it.

For each view: the happy path; GET refused where the view is POST-only; anonymous visitors sent to
the login page; a role without the right gets 403; a record of another site answers 404 (an
outsider nurse), whatever the role. Refused writes post a *valid* form, so that a missing check
would show as a saved row. The vitals form posted by htmx answers with the live part of the page:
a fresh form after a save, field errors (never a server error) on bad input.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from clinic.models import Notification, Role, Signature, SignatureFailure
from monitoring import services
from monitoring.evaluation import FAHRENHEIT_HINT
from monitoring.models import (
    Alert,
    ControlledSubstanceEntry,
    DrugLot,
    Observation,
    RequiredCheck,
    TreatmentSession,
    VitalReading,
)
from monitoring.urls import urlpatterns
from protocols.services import DBP_NOT_BELOW_SBP
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
LIVE = "monitoring/partials/session_live.html"
NORMAL = {"sbp": 128, "dbp": 82, "hr": 74, "rr": 14, "spo2": 98, "moaas": 5}
TOKEN = re.compile(r'name="client_token" value="([0-9a-f-]{36})"')


def first_template(response) -> str:
    """The template the view rendered (the others are included in it)."""
    return response.templates[0].name


def vitals_form(**overrides: Any) -> dict[str, str]:
    data = {k: str(v) for k, v in NORMAL.items()}
    data["client_token"] = str(uuid.uuid4())
    data.update({k: str(v) for k, v in overrides.items()})
    return data


def local_input(when) -> str:
    """A datetime-local value in the current (site) time zone, as the browser sends it. A naive
    value is a form's own initial value, already in the site's time zone."""
    if timezone.is_aware(when):
        when = timezone.localtime(when)
    return when.strftime("%Y-%m-%dT%H:%M")


def critical_rule(session: TreatmentSession, field_name: str):
    return next(
        r
        for r in session.rules.alerts
        if r.level == "critical"
        and r.field == field_name
        and not r.over_baseline
        and not r.persistence_window_minutes
    )


@pytest.fixture
def monitoring_session(dosing, nurse) -> TreatmentSession:
    services.dose_complete(session=dosing, acting_user=nurse, ended_at=timezone.now())
    dosing.refresh_from_db()
    return dosing


@pytest.fixture
def world(approved_course, dosing, nurse, ketamine_lot) -> SimpleNamespace:
    """A dosing session with a critical alert, an open check and a lot: one of each object."""
    rule = critical_rule(dosing, "spo2")
    reading = services.vitals_record(
        session=dosing, acting_user=nurse, **{**NORMAL, "spo2": int(rule.value) - 2}
    )
    return SimpleNamespace(
        course=approved_course,
        session=dosing,
        reading=reading,
        alert=dosing.alerts.get(level=Alert.Level.CRITICAL),
        check=dosing.checks.required()
        .filter(satisfied_at__isnull=True, due_at__isnull=False)
        .first(),
        lot=ketamine_lot,
    )


# --- Who may do what ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    obj: str | None  # which object of `world` the URL names
    methods: tuple[str, ...] = ("GET", "POST")
    writes: bool = True

    def url(self, world: SimpleNamespace) -> str:
        if self.obj is None:
            return reverse(self.name)
        return reverse(self.name, kwargs={f"{self.obj}_id": getattr(world, self.obj).pk})


ROUTES = {
    r.name: r
    for r in [
        Route("monitoring:floor", None, ("GET",), writes=False),
        Route("monitoring:session_new", "course"),
        Route("monitoring:session", "session", ("GET",), writes=False),
        Route("monitoring:session_live", "session", ("GET",), writes=False),
        Route("monitoring:check_in", "session"),
        Route("monitoring:predose_decision", "session"),
        Route("monitoring:dose_new", "session"),
        Route("monitoring:dose_complete", "session", ("POST",)),
        Route("monitoring:vitals_new", "session", ("POST",)),
        Route("monitoring:observation_new", "session"),
        Route("monitoring:discharge", "session"),
        Route("monitoring:abort", "session"),
        Route("monitoring:report", "session", ("GET",), writes=False),
        Route("monitoring:vitals_error", "reading"),
        Route("monitoring:alert_acknowledge", "alert"),
        Route("monitoring:check_excuse", "check"),
        Route("monitoring:register", None, ("GET",), writes=False),
        Route("monitoring:register_csv", None, ("GET",), writes=False),
        Route("monitoring:lot_new", None),
        Route("monitoring:waste_new", "lot"),
    ]
}


def test_the_table_covers_every_monitoring_url():
    assert {f"monitoring:{p.name}" for p in urlpatterns} == set(ROUTES)


def valid_post(name: str, world: SimpleNamespace, users: SimpleNamespace) -> dict[str, str]:
    """A form each view would accept from an allowed user (so a refused one shows nothing)."""
    now = local_input(timezone.now())
    return {
        "monitoring:session_new": {
            "scheduled_at": now,
            "chair": "9",
            "supervising_clinician": str(users.anesthesiologist.pk),
        },
        "monitoring:check_in": {"escort_confirmed": "on", "escort_details": "Brother, taxi"},
        "monitoring:predose_decision": {"decision": "proceed", "reason": "Repeat BP fine."},
        "monitoring:dose_new": {
            "lot": str(world.lot.pk),
            "dose_mg": "35",
            "volume_ml": "3.5",
            "started_at": now,
            "prescriber": str(users.psychiatrist.pk),
        },
        "monitoring:dose_complete": {"ended_at": now},
        "monitoring:vitals_new": vitals_form(),
        "monitoring:observation_new": {"kind": "cadss", "cadss_total": "12"},
        "monitoring:discharge": {
            **dict.fromkeys(
                (
                    "aldrete_activity",
                    "aldrete_respiration",
                    "aldrete_circulation",
                    "aldrete_consciousness",
                    "aldrete_spo2",
                ),
                "2",
            ),
            "moaas": "5",
            "escort_present": "on",
            "no_driving_instruction_given": "on",
            "password": users.password,
        },
        "monitoring:abort": {"reason": "Patient unwell"},
        "monitoring:vitals_error": {"reason": "Cuff on the wrong arm"},
        "monitoring:alert_acknowledge": {"action_taken": "Oxygen 2 L, SpO2 back to 97"},
        "monitoring:check_excuse": {"reason": "Patient asleep"},
        "monitoring:lot_new": {
            "drug": "ketamine",
            "lot_number": "NEW-1",
            "concentration_mg_per_ml": "50",
            "expires_on": (timezone.localdate() + timedelta(days=200)).isoformat(),
            "received_mg": "500",
        },
        "monitoring:waste_new": {
            "amount_mg": "5",
            "reason": "Drawn up, not given",
            "witness": str(users.psychiatrist.pk),
            "witness_password": users.password,
        },
    }.get(name, {})


def snapshot() -> tuple:
    """Everything a Step 2 write could change."""
    return (
        list(
            TreatmentSession.objects.values_list("id", "status", "escort_details", "abort_reason")
        ),
        VitalReading.objects.count(),
        list(VitalReading.objects.values_list("id", "entered_in_error_at")),
        list(Alert.objects.values_list("id", "acknowledged_at")),
        list(RequiredCheck.objects.values_list("id", "excused_reason")),
        Observation.objects.count(),
        ControlledSubstanceEntry.objects.count(),
        DrugLot.objects.count(),
        Signature.objects.count(),
    )


@pytest.fixture
def users(nurse, psychiatrist, anesthesiologist, gp, administrator, outsider, password):
    return SimpleNamespace(
        nurse=nurse,
        psychiatrist=psychiatrist,
        anesthesiologist=anesthesiologist,
        gp=gp,
        administrator=administrator,
        outsider=outsider,
        password=password,
    )


def request(client, method: str, url: str, data: dict | None = None):
    return client.get(url) if method == "GET" else client.post(url, data or {})


@pytest.mark.parametrize(
    ("name", "method"), [(r.name, m) for r in ROUTES.values() for m in r.methods]
)
def test_anonymous_visitors_are_sent_to_the_login_page(client, world, users, name, method):
    route = ROUTES[name]
    url = route.url(world)
    before = snapshot()

    response = request(client, method, url, valid_post(name, world, users))

    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={url}"
    assert snapshot() == before


@pytest.mark.parametrize("name", ["monitoring:vitals_new", "monitoring:dose_complete"])
@pytest.mark.parametrize("who", ["nurse", "outsider"])
def test_post_only_views_refuse_a_get(client, world, users, name, who):
    client.force_login(getattr(users, who))
    before = snapshot()

    response = client.get(ROUTES[name].url(world))

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert snapshot() == before


WRONG_ROLE = [
    # SPEC §U: the GP only reads sessions.
    *(("gp", name) for name in ("monitoring:check_in", "monitoring:vitals_new")),
    *(
        ("gp", name)
        for name in (
            "monitoring:session_new",
            "monitoring:dose_new",
            "monitoring:dose_complete",
            "monitoring:observation_new",
            "monitoring:abort",
            "monitoring:vitals_error",
            "monitoring:check_excuse",
            "monitoring:alert_acknowledge",
            "monitoring:discharge",
            "monitoring:waste_new",
        )
    ),
    # Nurses record; they do not acknowledge critical alerts, discharge or decide on dosing.
    *(
        ("nurse", name)
        for name in (
            "monitoring:alert_acknowledge",
            "monitoring:discharge",
            "monitoring:predose_decision",
            "monitoring:register_csv",
        )
    ),
    # The anesthesiologist supervises; the prescriber (psychiatrist) decides and schedules.
    ("anesthesiologist", "monitoring:predose_decision"),
    ("anesthesiologist", "monitoring:session_new"),
    ("psychiatrist", "monitoring:register_csv"),
    # Administrators create or change no clinical record. (Receiving a lot into stock is granted
    # to them by the roles migration: monitoring.add_druglot.)
    *(
        ("administrator", r.name)
        for r in ROUTES.values()
        if r.writes and r.name != "monitoring:lot_new"
    ),
]


@pytest.mark.parametrize(("who", "name"), WRONG_ROLE)
def test_a_role_without_the_right_gets_403_and_nothing_changes(client, world, users, who, name):
    route = ROUTES[name]
    client.force_login(getattr(users, who))
    before = snapshot()

    for method in route.methods:
        response = request(client, method, route.url(world), valid_post(name, world, users))
        assert response.status_code == 403, method

    assert snapshot() == before


@pytest.mark.parametrize(
    ("name", "method"),
    [(r.name, m) for r in ROUTES.values() if r.obj is not None for m in r.methods],
)
def test_a_record_of_another_site_answers_404(client, world, users, name, method):
    client.force_login(users.outsider)
    before = snapshot()

    response = request(client, method, ROUTES[name].url(world), valid_post(name, world, users))

    assert response.status_code == 404
    assert snapshot() == before


@pytest.mark.parametrize(
    ("who", "name"),
    [
        ("anesthesiologist", "monitoring:alert_acknowledge"),
        ("anesthesiologist", "monitoring:discharge"),
        ("psychiatrist", "monitoring:predose_decision"),
    ],
)
def test_a_clinician_of_another_site_gets_404_even_with_the_right(
    client, world, users, other_site, who, name
):
    role = getattr(users, who).groups.get().name
    stranger = UserFactory(username=f"harbour-{who}", roles=[role], sites=[other_site])
    client.force_login(stranger)
    before = snapshot()

    for method in ROUTES[name].methods:
        response = request(client, method, ROUTES[name].url(world), valid_post(name, world, users))
        assert response.status_code == 404, method

    assert snapshot() == before


def test_the_floor_board_of_a_user_without_a_site_is_404(client, world):
    homeless = UserFactory(username="homeless", roles=[Role.NURSE], sites=[])
    client.force_login(homeless)

    assert client.get(reverse("monitoring:floor")).status_code == 404


# --- Happy paths --------------------------------------------------------------------------------


def test_the_floor_board_lists_the_sites_active_sessions(client, world, nurse, outsider):
    client.force_login(nurse)

    response = client.get(reverse("monitoring:floor"))

    assert response.status_code == 200
    row = response.context["sessions"].get()
    assert row == world.session
    assert row.open_critical == 1
    page = response.content.decode()
    assert 'data-testid="critical-count">1 critical' in page
    assert world.session.patient.family_name in page

    client.force_login(outsider)
    other = client.get(reverse("monitoring:floor"), headers=HTMX)
    assert other.status_code == 200
    assert world.session.patient.family_name not in other.content.decode()
    assert first_template(other) == "monitoring/partials/floor_rows.html"


def test_a_nurse_schedules_a_session(client, approved_course, nurse, anesthesiologist):
    client.force_login(nurse)
    url = reverse("monitoring:session_new", kwargs={"course_id": approved_course.pk})
    assert client.get(url).status_code == 200

    response = client.post(
        url,
        {
            "scheduled_at": local_input(timezone.now() + timedelta(days=1)),
            "chair": "Room 2",
            "supervising_clinician": str(anesthesiologist.pk),
        },
    )

    session = TreatmentSession.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("monitoring:session", kwargs={"session_id": session.pk})
    assert (session.status, session.chair, session.supervising_clinician) == (
        TreatmentSession.Status.SCHEDULED,
        "Room 2",
        anesthesiologist,
    )


def test_the_session_page_and_its_live_part_show_the_session(client, world, nurse, gp):
    client.force_login(nurse)
    url = reverse("monitoring:session", kwargs={"session_id": world.session.pk})

    page = client.get(url)
    live = client.get(reverse("monitoring:session_live", kwargs={"session_id": world.session.pk}))

    assert page.status_code == live.status_code == 200
    assert "base.html" in [t.name for t in page.templates]
    assert first_template(live) == LIVE
    assert "base.html" not in [t.name for t in live.templates]
    for response in (page, live):
        html = response.content.decode()
        assert html.count('data-testid="reading"') == world.session.vitals.count()
        assert 'id="vitals-form"' in html
        assert world.alert.message in html
    # The GP reads the session but has no vitals form.
    client.force_login(gp)
    assert 'id="vitals-form"' not in client.get(url).content.decode()


def test_a_nurse_checks_a_patient_in_with_the_escort(client, scheduled, nurse):
    client.force_login(nurse)
    url = reverse("monitoring:check_in", kwargs={"session_id": scheduled.pk})
    assert client.get(url).status_code == 200

    response = client.post(url, {"escort_confirmed": "on", "escort_details": "Sister, by car"})

    scheduled.refresh_from_db()
    assert response.status_code == 302
    assert scheduled.status == TreatmentSession.Status.CHECKED_IN
    assert (scheduled.checked_in_by, scheduled.escort_details) == (nurse, "Sister, by car")


def test_the_prescriber_decides_to_proceed_on_a_raised_predose_pressure(
    client, checked_in, nurse, psychiatrist
):
    high = next(r for r in checked_in.rules.predose_alerts if r.field == "sbp")
    services.vitals_record(
        session=checked_in, acting_user=nurse, **{**NORMAL, "sbp": int(high.value) + 10}
    )
    client.force_login(psychiatrist)
    url = reverse("monitoring:predose_decision", kwargs={"session_id": checked_in.pk})
    assert client.get(url).status_code == 200

    response = client.post(url, {"decision": "proceed", "reason": "Anxious; repeat BP 138/84."})

    checked_in.refresh_from_db()
    assert response.status_code == 302
    assert (checked_in.predose_decision, checked_in.predose_decision_by) == (
        "proceed",
        psychiatrist,
    )
    gate = client.get(reverse("monitoring:session", kwargs={"session_id": checked_in.pk}))
    assert 'data-condition="predose-decision" data-met="yes"' in gate.content.decode()


def test_a_nurse_records_the_dose_and_the_schedule_starts(
    client, ready, nurse, psychiatrist, ketamine_lot, time_machine
):
    # A minute after check-in, so that the form's default start (this minute) is after it.
    time_machine.move_to(ready.checked_in_at + timedelta(minutes=1), tick=True)
    client.force_login(nurse)
    url = reverse("monitoring:dose_new", kwargs={"session_id": ready.pk})
    form = client.get(url)
    assert form.status_code == 200
    started = form.context["form"]["started_at"].value()

    response = client.post(
        url,
        {
            "lot": str(ketamine_lot.pk),
            "dose_mg": "35",
            "volume_ml": "3.5",
            "started_at": local_input(started),
            "prescriber": str(psychiatrist.pk),
        },
    )

    ready.refresh_from_db()
    assert response.status_code == 302
    assert ready.status == TreatmentSession.Status.DOSING
    dose = ready.doses.get()
    assert (dose.dose_mg, dose.dose_mg_per_kg, dose.administered_by) == (
        Decimal("35"),
        Decimal("0.500"),
        nurse,
    )
    assert ready.checks.exists()
    assert ControlledSubstanceEntry.objects.filter(session=ready, kind="administration").exists()


def test_the_dose_forms_default_start_is_accepted_in_the_minute_of_check_in(
    client, scheduled, nurse, psychiatrist, ketamine_lot, time_machine
):
    minute = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=5)
    time_machine.move_to(minute + timedelta(seconds=30), tick=False)
    services.session_check_in(
        session=scheduled, acting_user=nurse, escort_confirmed=True, escort_details="Sister"
    )
    services.vitals_record(session=scheduled, acting_user=nurse, **NORMAL)
    time_machine.move_to(minute + timedelta(seconds=50), tick=False)
    client.force_login(nurse)
    url = reverse("monitoring:dose_new", kwargs={"session_id": scheduled.pk})
    started = client.get(url).context["form"]["started_at"].value()

    response = client.post(
        url,
        {
            "lot": str(ketamine_lot.pk),
            "dose_mg": "35",
            "volume_ml": "3.5",
            "started_at": local_input(started),
            "prescriber": str(psychiatrist.pk),
        },
    )

    assert response.status_code == 302, response.context["form"].errors


def test_a_nurse_marks_the_dose_complete(client, dosing, nurse, time_machine):
    time_machine.move_to(dosing.dose_started_at + timedelta(minutes=40), tick=True)
    client.force_login(nurse)

    response = client.post(
        reverse("monitoring:dose_complete", kwargs={"session_id": dosing.pk}),
        {"ended_at": local_input(timezone.now())},
    )

    dosing.refresh_from_db()
    assert response.status_code == 302
    assert dosing.status == TreatmentSession.Status.MONITORING
    assert dosing.dose_ended_at is not None


def test_a_dose_end_before_its_start_is_refused_with_a_message(client, dosing, nurse):
    client.force_login(nurse)

    response = client.post(
        reverse("monitoring:dose_complete", kwargs={"session_id": dosing.pk}),
        {"ended_at": local_input(dosing.dose_started_at - timedelta(hours=1))},
        follow=True,
    )

    dosing.refresh_from_db()
    assert response.status_code == 200
    assert dosing.status == TreatmentSession.Status.DOSING
    assert "The end must be between the start and now." in response.content.decode()


def test_a_nurse_records_vitals_without_htmx_and_is_sent_back_to_the_session(client, dosing, nurse):
    client.force_login(nurse)
    data = vitals_form(temperature_c="36.9")

    response = client.post(reverse("monitoring:vitals_new", kwargs={"session_id": dosing.pk}), data)

    assert response.status_code == 302
    assert response.url == reverse("monitoring:session", kwargs={"session_id": dosing.pk})
    reading = VitalReading.objects.get(client_token=data["client_token"])
    assert (reading.sbp, reading.temperature_c, reading.entered_by) == (
        128,
        Decimal("36.9"),
        nurse,
    )
    assert not reading.is_predose


def test_a_nurse_records_cadss_and_an_adverse_event(client, dosing, nurse):
    client.force_login(nurse)
    url = reverse("monitoring:observation_new", kwargs={"session_id": dosing.pk})
    assert client.get(url).status_code == 200

    cadss = client.post(url, {"kind": "cadss", "cadss_total": "14"})
    event = client.post(
        url,
        {
            "kind": "adverse-event",
            "event_type": "Vomiting",
            "severity": "moderate",
            "action": "Ondansetron 4 mg",
            "outcome": "Settled",
            "serious": "",
        },
    )

    assert cadss.status_code == event.status_code == 302
    assert list(dosing.observations.values_list("kind", "cadss_total", "event_type")) == [
        ("cadss", 14, ""),
        ("adverse-event", None, "Vomiting"),
    ]


def test_a_cadss_total_out_of_range_is_a_field_error(client, dosing, nurse):
    client.force_login(nurse)

    response = client.post(
        reverse("monitoring:observation_new", kwargs={"session_id": dosing.pk}),
        {"kind": "cadss", "cadss_total": "93"},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["cadss_total"]
    assert not dosing.observations.exists()


def discharge_ready(session: TreatmentSession, nurse, time_machine) -> None:
    """Past the minimum observation, CADSS recorded, the checks not met excused."""
    time_machine.move_to(
        session.dose_ended_at + timedelta(minutes=session.rules.minimum_observation_minutes + 1)
    )
    services.observation_record(session=session, acting_user=nurse, kind="cadss", cadss_total=0)
    # Recovered: the readings before discharge agree with the criteria entered (SPEC §M9).
    services.vitals_record(session=session, acting_user=nurse, **NORMAL)
    for check in session.checks.required().filter(satisfied_at__isnull=True, due_at__isnull=False):
        services.check_excuse(check=check, acting_user=nurse, reason="Patient asleep")


def test_the_anesthesiologist_signs_the_discharge_with_the_password(
    client, monitoring_session, nurse, anesthesiologist, users, world, time_machine
):
    discharge_ready(monitoring_session, nurse, time_machine)
    services.alert_acknowledge(
        alert=world.alert, acting_user=anesthesiologist, action_taken="Oxygen, settled"
    )
    client.force_login(anesthesiologist)
    url = reverse("monitoring:discharge", kwargs={"session_id": monitoring_session.pk})
    form = client.get(url)
    assert form.status_code == 200
    assert 'data-met="no"' not in form.content.decode()

    response = client.post(url, valid_post("monitoring:discharge", world, users))

    monitoring_session.refresh_from_db()
    assert response.status_code == 302
    assert monitoring_session.status == TreatmentSession.Status.DISCHARGED
    assert monitoring_session.is_locked
    signature = Signature.objects.get(object_id=monitoring_session.pk, meaning="discharged")
    assert signature.signer == anesthesiologist
    page = client.get(response.url).content.decode()
    assert 'data-testid="signature"' in page
    assert anesthesiologist.printed_name in page
    assert 'id="vitals-form"' not in page


def test_a_discharge_with_a_wrong_password_is_refused_and_recorded_as_a_failed_attempt(
    client, monitoring_session, nurse, anesthesiologist, users, world, time_machine
):
    discharge_ready(monitoring_session, nurse, time_machine)
    services.alert_acknowledge(
        alert=world.alert, acting_user=anesthesiologist, action_taken="Oxygen, settled"
    )
    client.force_login(anesthesiologist)
    data = {**valid_post("monitoring:discharge", world, users), "password": "not-my-password"}

    response = client.post(
        reverse("monitoring:discharge", kwargs={"session_id": monitoring_session.pk}), data
    )

    monitoring_session.refresh_from_db()
    assert response.status_code == 200
    assert response.context["form"].errors["password"]
    assert monitoring_session.status == TreatmentSession.Status.MONITORING
    assert SignatureFailure.objects.filter(user=anesthesiologist).count() == 1
    assert not Signature.objects.filter(meaning="discharged").exists()


def test_a_discharge_before_the_minimum_observation_is_refused_with_the_gate(
    client, monitoring_session, anesthesiologist, users, world
):
    client.force_login(anesthesiologist)

    response = client.post(
        reverse("monitoring:discharge", kwargs={"session_id": monitoring_session.pk}),
        valid_post("monitoring:discharge", world, users),
    )

    monitoring_session.refresh_from_db()
    assert response.status_code == 200
    assert monitoring_session.status == TreatmentSession.Status.MONITORING
    page = response.content.decode()
    assert 'data-testid="form-error"' in page
    assert "Minimum observation time" in page
    assert 'data-condition="observation" data-met="no"' in page


def test_a_nurse_aborts_a_session_with_a_reason(client, checked_in, nurse):
    client.force_login(nurse)
    url = reverse("monitoring:abort", kwargs={"session_id": checked_in.pk})
    assert client.get(url).status_code == 200
    assert client.post(url, {"reason": ""}).status_code == 200  # the reason is required

    response = client.post(url, {"reason": "Patient left before dosing"})

    checked_in.refresh_from_db()
    assert response.status_code == 302
    assert (checked_in.status, checked_in.abort_reason) == ("aborted", "Patient left before dosing")


def test_the_report_shows_the_dose_vitals_and_alerts(client, world, gp):
    client.force_login(gp)

    response = client.get(reverse("monitoring:report", kwargs={"session_id": world.session.pk}))

    assert response.status_code == 200
    page = response.content.decode()
    assert world.lot.lot_number in page
    assert world.alert.message in page
    assert "vitals-chart-data" in page


def test_a_nurse_marks_a_reading_entered_in_error(client, world, nurse):
    client.force_login(nurse)
    url = reverse("monitoring:vitals_error", kwargs={"reading_id": world.reading.pk})
    assert client.get(url).status_code == 200

    response = client.post(url, {"reason": "Probe had slipped off the finger"})

    world.reading.refresh_from_db()
    assert response.status_code == 302
    assert not world.reading.is_valid
    assert world.reading.error_reason == "Probe had slipped off the finger"
    assert VitalReading.objects.filter(pk=world.reading.pk).exists()  # kept, never deleted


def test_the_anesthesiologist_acknowledges_a_critical_alert_with_the_action(
    client, world, anesthesiologist
):
    assert Notification.objects.filter(
        recipient=anesthesiologist, kind=Notification.Kind.CRITICAL_ALERT
    ).exists()
    client.force_login(anesthesiologist)
    url = reverse("monitoring:alert_acknowledge", kwargs={"alert_id": world.alert.pk})
    assert client.get(url).status_code == 200
    assert client.post(url, {"action_taken": ""}).status_code == 200  # the action is required

    response = client.post(url, {"action_taken": "Oxygen 2 L; SpO2 97 after 3 min"})

    world.alert.refresh_from_db()
    assert response.status_code == 302
    assert (world.alert.acknowledged_by, world.alert.action_taken) == (
        anesthesiologist,
        "Oxygen 2 L; SpO2 97 after 3 min",
    )


def test_a_nurse_records_a_missed_check_as_a_deviation(client, world, nurse):
    client.force_login(nurse)
    url = reverse("monitoring:check_excuse", kwargs={"check_id": world.check.pk})
    assert client.get(url).status_code == 200

    response = client.post(url, {"reason": "Patient in the bathroom"})

    world.check.refresh_from_db()
    assert response.status_code == 302
    assert (world.check.excused_reason, world.check.excused_by) == (
        "Patient in the bathroom",
        nurse,
    )


def test_the_register_and_its_export(client, world, nurse, administrator):
    client.force_login(nurse)
    page = client.get(reverse("monitoring:register"))
    assert page.status_code == 200
    assert world.lot.lot_number in page.content.decode()

    client.force_login(administrator)
    export = client.get(reverse("monitoring:register_csv"))
    assert export.status_code == 200
    assert export["Content-Type"].startswith("text/csv")
    body = b"".join(export.streaming_content) if export.streaming else export.content
    assert world.lot.lot_number.encode() in body


def test_a_nurse_receives_a_lot_and_records_a_witnessed_waste(
    client, world, nurse, users, psychiatrist
):
    client.force_login(nurse)
    assert client.get(reverse("monitoring:lot_new")).status_code == 200
    received = client.post(
        reverse("monitoring:lot_new"), valid_post("monitoring:lot_new", world, users)
    )
    assert received.status_code == 302
    lot = DrugLot.objects.get(lot_number="NEW-1")

    url = reverse("monitoring:waste_new", kwargs={"lot_id": lot.pk})
    assert client.get(url).status_code == 200
    wasted = client.post(url, valid_post("monitoring:waste_new", world, users))

    assert wasted.status_code == 302
    waste = ControlledSubstanceEntry.objects.get(lot=lot, kind="waste")
    assert (waste.by, waste.witness, waste.balance_mg) == (nurse, psychiatrist, Decimal("495"))


# --- The vitals form through htmx ---------------------------------------------------------------


def test_an_htmx_vitals_save_returns_the_live_part_with_a_fresh_form(client, dosing, nurse):
    client.force_login(nurse)
    data = vitals_form(sbp=131)

    response = client.post(
        reverse("monitoring:vitals_new", kwargs={"session_id": dosing.pk}), data, headers=HTMX
    )

    assert response.status_code == 200
    assert first_template(response) == LIVE
    html = response.content.decode()
    assert 'data-testid="saved"' in html
    assert VitalReading.objects.filter(client_token=data["client_token"], sbp=131).exists()
    new_token = TOKEN.search(html).group(1)
    assert new_token != data["client_token"]
    assert response.context["vitals_form"].is_bound is False
    assert 'name="sbp" value=' not in html  # the fields are empty for the next set
    assert html.count('data-testid="reading"') == dosing.vitals.count()


BAD_VITALS = [
    ("sbp", {"sbp": "400"}, "Enter a value between 50 and 300."),
    ("sbp", {"sbp": "49"}, "Enter a value between 50 and 300."),
    ("sbp", {"sbp": "-5"}, "Enter a value between 50 and 300."),
    ("sbp", {"sbp": "12O"}, "Enter a whole number."),
    ("sbp", {"sbp": "120.5"}, "Enter a whole number."),
    ("sbp", {"sbp": "99999999999999999999"}, "Enter a value between 50 and 300."),
    ("dbp", {"dbp": "19"}, "Enter a value between 20 and 200."),
    ("dbp", {"sbp": "120", "dbp": "125"}, DBP_NOT_BELOW_SBP),
    ("hr", {"hr": "251"}, "Enter a value between 20 and 250."),
    ("rr", {"rr": "3"}, "Enter a value between 4 and 60."),
    ("spo2", {"spo2": "101"}, "Enter a value between 50 and 100."),
    ("spo2", {"spo2": "95.5"}, "Enter a whole number."),
    ("temperature_c", {"temperature_c": "98.6"}, FAHRENHEIT_HINT),
    ("temperature_c", {"temperature_c": "45"}, "Enter a value between 30 and 43."),
    ("temperature_c", {"temperature_c": "NaN"}, "Enter a number."),
    ("temperature_c", {"temperature_c": "36.85"}, "decimal place"),
    ("moaas", {"moaas": "7"}, "less than or equal to 5"),
    ("measured_at", {"measured_at": "soon"}, "Enter a valid date/time."),
]


@pytest.mark.parametrize(
    ("field_name", "bad", "message"),
    BAD_VITALS,
    ids=[f"{f}={list(b.values())[-1]}" for f, b, _ in BAD_VITALS],
)
def test_bad_vitals_through_htmx_get_a_field_error_and_save_nothing(
    client, dosing, nurse, field_name, bad, message
):
    client.force_login(nurse)
    data = vitals_form(**bad)
    before = dosing.vitals.count()

    response = client.post(
        reverse("monitoring:vitals_new", kwargs={"session_id": dosing.pk}), data, headers=HTMX
    )

    assert response.status_code == 200
    assert first_template(response) == LIVE
    html = response.content.decode()
    errors = re.findall(
        rf'<div class="invalid-feedback d-block" data-field="{field_name}">([^<]*)</div>', html
    )
    assert any(message in e for e in errors), errors
    assert dosing.vitals.count() == before
    assert not Alert.objects.filter(session=dosing).exists()
    # The typed values stay, and so does the token: nothing was saved under it.
    assert TOKEN.search(html).group(1) == data["client_token"]
    assert 'data-testid="saved"' not in html


@pytest.mark.parametrize(
    ("field_name", "bad"),
    [("sbp", {"sbp": "400"}), ("temperature_c", {"temperature_c": "98.6"})],
)
def test_a_plausibility_error_outlines_the_field_in_error(client, dosing, nurse, field_name, bad):
    client.force_login(nurse)

    response = client.post(
        reverse("monitoring:vitals_new", kwargs={"session_id": dosing.pk}),
        vitals_form(**bad),
        headers=HTMX,
    )

    tag = re.search(rf'<input[^>]*name="{field_name}"[^>]*>', response.content.decode()).group(0)
    assert "is-invalid" in tag


def test_a_non_numeric_entry_outlines_the_field_in_error(client, dosing, nurse):
    client.force_login(nurse)

    response = client.post(
        reverse("monitoring:vitals_new", kwargs={"session_id": dosing.pk}),
        vitals_form(hr="fast"),
        headers=HTMX,
    )

    tag = re.search(r'<input[^>]*name="hr"[^>]*>', response.content.decode()).group(0)
    assert "is-invalid" in tag
    assert 'value="fast"' in tag


@pytest.mark.parametrize(
    ("when", "message"),
    [
        (lambda s: timezone.now() + timedelta(minutes=10), services.MEASURED_IN_FUTURE),
        (lambda s: s.checked_in_at - timedelta(minutes=10), services.MEASURED_BEFORE_CHECK_IN),
    ],
    ids=["future", "before-check-in"],
)
def test_a_measurement_time_outside_the_session_is_a_field_error(
    client, dosing, nurse, when, message
):
    client.force_login(nurse)
    before = dosing.vitals.count()

    response = client.post(
        reverse("monitoring:vitals_new", kwargs={"session_id": dosing.pk}),
        vitals_form(measured_at=local_input(when(dosing))),
        headers=HTMX,
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert dosing.vitals.count() == before


def test_an_empty_vitals_form_asks_for_a_measurement(client, dosing, nurse):
    client.force_login(nurse)
    before = dosing.vitals.count()
    empty = {"client_token": str(uuid.uuid4())}

    response = client.post(
        reverse("monitoring:vitals_new", kwargs={"session_id": dosing.pk}), empty, headers=HTMX
    )

    assert response.status_code == 200
    assert services.NO_VALUES in response.content.decode()
    assert dosing.vitals.count() == before


@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
def test_vitals_posted_to_a_closed_session_are_refused_with_a_message(
    client, checked_in, nurse, htmx
):
    # The session was closed while the nurse typed (aborted here; discharged alike).
    services.session_abort(session=checked_in, acting_user=nurse, reason="Patient unwell")
    client.force_login(nurse)
    session_url = reverse("monitoring:session", kwargs={"session_id": checked_in.pk})

    response = client.post(
        reverse("monitoring:vitals_new", kwargs={"session_id": checked_in.pk}),
        vitals_form(),
        headers=HTMX if htmx else {},
    )

    assert not checked_in.vitals.exists()
    if htmx:  # htmx reloads the whole page, so the new status shows with the message
        assert (response.status_code, response["HX-Redirect"]) == (204, session_url)
    else:
        assert (response.status_code, response.url) == (302, session_url)
    page = client.get(session_url).content.decode()
    assert "Nothing saved: this session is not in progress." in page
    assert 'data-testid="session-status">Aborted' in page


def test_a_critical_reading_through_htmx_shows_the_alert_but_no_acknowledge_for_a_nurse(
    client, dosing, nurse
):
    rule = critical_rule(dosing, "spo2")
    client.force_login(nurse)

    response = client.post(
        reverse("monitoring:vitals_new", kwargs={"session_id": dosing.pk}),
        vitals_form(spo2=int(rule.value) - 2),
        headers=HTMX,
    )

    html = response.content.decode()
    assert 'data-level="critical" data-acknowledged="no"' in html
    assert rule.message in html
    assert "/acknowledge/" not in html


# --- Missed checks (SPEC §M6) -------------------------------------------------------------------


@pytest.fixture
def past_first_window(dosing, time_machine) -> RequiredCheck:
    """The clock is past the first infusion check's window, with no reading in it."""
    check = dosing.checks.get(code="infusion-1")
    time_machine.move_to(check.due_at + timedelta(minutes=check.window_minutes + 1), tick=True)
    return check


def test_the_session_page_marks_a_missed_check_overdue_and_offers_to_record_a_deviation(
    client, dosing, nurse, past_first_window
):
    client.force_login(nurse)

    response = client.get(reverse("monitoring:session", kwargs={"session_id": dosing.pk}))

    html = response.content.decode()
    excuse = reverse("monitoring:check_excuse", kwargs={"check_id": past_first_window.pk})
    assert f'href="{excuse}"' in html
    assert "overdue" in html.split('data-testid="checks"')[1]


def test_the_floor_board_counts_the_missed_checks_as_overdue(
    client, dosing, nurse, past_first_window
):
    client.force_login(nurse)

    response = client.get(reverse("monitoring:floor"))

    # The first infusion vitals and the baseline CADSS (due at the start, 15-min window).
    now = timezone.now()
    missed = {
        c.code for c in dosing.checks.all() if not c.is_done and c.overdue_at and c.overdue_at < now
    }
    assert missed == {"infusion-1", "cadss_baseline"}
    assert response.context["sessions"].get().overdue_checks == len(missed)
    assert 'data-testid="overdue">2 overdue' in response.content.decode()


def test_a_missed_check_blocks_the_discharge_until_it_is_excused(
    client, monitoring_session, nurse, anesthesiologist, time_machine
):
    time_machine.move_to(
        monitoring_session.dose_ended_at
        + timedelta(minutes=monitoring_session.rules.minimum_observation_minutes + 1)
    )
    services.observation_record(
        session=monitoring_session, acting_user=nurse, kind="cadss", cadss_total=0
    )
    client.force_login(anesthesiologist)
    url = reverse("monitoring:discharge", kwargs={"session_id": monitoring_session.pk})

    blocked = client.get(url).content.decode()
    assert 'data-condition="checks" data-met="no"' in blocked

    for check in monitoring_session.checks.required().filter(
        satisfied_at__isnull=True, due_at__isnull=False
    ):
        services.check_excuse(check=check, acting_user=nurse, reason="Patient asleep")
    assert 'data-condition="checks" data-met="yes"' in client.get(url).content.decode()
