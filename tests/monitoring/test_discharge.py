"""Discharge (SPEC §G4, §M9) and the lock that follows it (§S3).

A discharge is refused, with nothing locked and no signature, until the minimum observation has
passed, every required check is recorded or excused, every critical alert is acknowledged and the
discharge criteria of the protocol version hold; it is signed with the password by a clinician
allowed to discharge. After it, the session and its children refuse every path of change: forms,
services, model saves, bulk updates, raw SQL (database triggers) and the admin.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from clinic import signatures
from clinic.models import RecordLocked, Role, Signature, SignatureFailure
from monitoring import gates, services
from monitoring.models import (
    Alert,
    Discharge,
    DoseAdministration,
    Observation,
    RequiredCheck,
    TreatmentSession,
    VitalReading,
)
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

NORMAL = {"sbp": 125, "dbp": 80, "hr": 70, "rr": 14, "spo2": 98, "moaas": 5}
ALDRETE = (
    "aldrete_activity",
    "aldrete_respiration",
    "aldrete_circulation",
    "aldrete_consciousness",
    "aldrete_spo2",
)
ALDRETE_ITEM_MAX = 2


def fresh(session: TreatmentSession) -> TreatmentSession:
    return TreatmentSession.objects.select_related("course__protocol_version", "patient").get(
        pk=session.pk
    )


def aldrete(total: int) -> dict[str, int]:
    """Item scores adding up to `total`; points are taken off activity and respiration first,
    the items no reading records (SpO2, consciousness and circulation must agree with the
    readings, SPEC §M9)."""
    scores, left = {}, total
    for item in reversed(ALDRETE):
        scores[item] = min(ALDRETE_ITEM_MAX, left)
        left -= scores[item]
    return scores


def criteria(session: TreatmentSession, **overrides) -> dict:
    """Discharge values meeting every criterion of the session's protocol version."""
    rule = session.rules.discharge
    values = {
        **aldrete(ALDRETE_ITEM_MAX * len(ALDRETE)),
        "moaas": rule["moaas_required"],
        "escort_present": True,
        "no_driving_instruction_given": True,
        "prescriber_decision": "Fit to leave" if rule["prescriber_decision_required"] else "",
        "ready_to_leave_minutes": None,
        "notes": "",
    }
    return {**values, **overrides}


def form_values(session) -> dict:
    return {k: v for k, v in criteria(session).items() if v is not None}


def discharge(session, signer, password, **overrides) -> TreatmentSession:
    return services.session_discharge(
        session=session, signer=signer, password=password, **criteria(session, **overrides)
    )


def signatures_of(session) -> list[Signature]:
    return list(
        Signature.objects.filter(
            content_type=ContentType.objects.get_for_model(TreatmentSession), object_id=session.pk
        )
    )


def assert_not_discharged(session: TreatmentSession) -> None:
    session = fresh(session)
    assert session.status == TreatmentSession.Status.MONITORING
    assert session.locked_at is None
    assert session.discharged_at is None
    assert not Discharge.objects.filter(session=session).exists()
    assert signatures_of(session) == []


def unmet_close(session) -> dict[str, str]:
    return {c.code: c.detail for c in gates.close_gate(fresh(session)) if not c.met}


def record_due_checks(session, nurse, *, skip=()) -> None:
    """What every check due by now needs, at its due time; before-discharge checks now."""
    now = timezone.now()
    for check in session.checks.order_by("due_at", "id"):
        check.refresh_from_db()
        at = check.due_at or now
        if check.code in skip or check.is_done or at > now:
            continue
        if check.measures == ["cadss"]:
            services.observation_record(
                session=session, acting_user=nurse, kind="cadss", observed_at=at, cadss_total=3
            )
        else:
            services.vitals_record(session=session, acting_user=nurse, measured_at=at, **NORMAL)


@pytest.fixture
def infusion_ended(dosing, nurse, time_machine) -> TreatmentSession:
    start = dosing.dose_started_at
    time_machine.move_to(
        start + timedelta(minutes=dosing.rules.dose["infusion_minutes"]), tick=False
    )
    services.dose_complete(session=dosing, acting_user=nurse, ended_at=timezone.now())
    return fresh(dosing)


@pytest.fixture
def observation_over(infusion_ended, time_machine) -> TreatmentSession:
    """The clock exactly at the end of the minimum observation."""
    time_machine.move_to(gates.observation_ends_at(infusion_ended), tick=False)
    return infusion_ended


@pytest.fixture
def ready_to_leave(observation_over, nurse) -> TreatmentSession:
    record_due_checks(observation_over, nurse)
    assert unmet_close(observation_over) == {}
    return fresh(observation_over)


# --- Refusals: nothing locked, no signature -------------------------------------------------------


def test_discharge_is_refused_a_minute_before_the_minimum_observation(
    infusion_ended, nurse, anesthesiologist, password, time_machine
):
    session = infusion_ended
    time_machine.move_to(gates.observation_ends_at(session) - timedelta(minutes=1), tick=False)
    record_due_checks(session, nurse)
    for check in session.checks.required().filter(satisfied_at=None, excused_reason=""):
        if check.due_at is not None:  # due at the very end: not yet possible
            services.check_excuse(check=check, acting_user=nurse, reason="Leaving early")
    assert set(unmet_close(session)) == {"observation"}

    with pytest.raises(ValidationError) as caught:
        discharge(session, anesthesiologist, password)

    assert caught.value.code == "gate"
    assert "Minimum observation time" in caught.value.messages[0]
    assert_not_discharged(session)


def test_discharge_is_allowed_exactly_at_the_end_of_the_minimum_observation(
    ready_to_leave, anesthesiologist, password
):
    discharge(ready_to_leave, anesthesiologist, password)

    assert fresh(ready_to_leave).status == TreatmentSession.Status.DISCHARGED


def test_discharge_is_refused_with_an_unacknowledged_critical_alert(
    observation_over, nurse, anesthesiologist, password
):
    session = observation_over
    rule = next(
        r
        for r in session.rules.alerts
        if r.level == "critical" and not r.over_baseline and r.persistence_window_minutes is None
    )
    value = int(rule.value) + {">": 1, "<": -1}.get(rule.op, 0)
    reading = services.vitals_record(
        session=session,
        acting_user=nurse,
        measured_at=session.dose_ended_at,
        **{rule.field: value},
    )
    (alert,) = reading.alerts.filter(level=Alert.Level.CRITICAL)
    record_due_checks(session, nurse)
    assert set(unmet_close(session)) == {"alerts"}

    with pytest.raises(ValidationError) as caught:
        discharge(session, anesthesiologist, password)

    assert "Every critical alert acknowledged" in caught.value.messages[0]
    assert_not_discharged(session)

    services.alert_acknowledge(alert=alert, acting_user=anesthesiologist, action_taken="Rechecked")
    discharge(fresh(session), anesthesiologist, password)
    assert fresh(session).status == TreatmentSession.Status.DISCHARGED


def test_discharge_is_refused_with_a_required_check_neither_recorded_nor_excused(
    observation_over, nurse, anesthesiologist, password
):
    session = observation_over
    record_due_checks(session, nurse, skip={"recovery-2"})
    missing = session.checks.get(code="recovery-2")
    assert unmet_close(session) == {"checks": f"Missing: {missing.label}"}

    with pytest.raises(ValidationError) as caught:
        discharge(session, anesthesiologist, password)

    assert missing.label in caught.value.messages[0]
    assert_not_discharged(session)

    services.check_excuse(check=missing, acting_user=nurse, reason="Patient asleep, not woken")
    discharge(fresh(session), anesthesiologist, password)
    assert fresh(session).status == TreatmentSession.Status.DISCHARGED


def test_discharge_is_refused_without_the_cadss_before_discharge(
    observation_over, nurse, anesthesiologist, password
):
    session = observation_over
    record_due_checks(session, nurse, skip={"cadss_discharge"})

    assert set(unmet_close(session)) == {"checks"}
    with pytest.raises(ValidationError):
        discharge(session, anesthesiologist, password)
    assert_not_discharged(session)


def criterion_cases():
    def below_aldrete(rule):
        return aldrete(rule["aldrete_min"] - 1)

    return [
        pytest.param(below_aldrete, "aldrete_activity", id="aldrete-below-minimum"),
        pytest.param(
            lambda rule: {"moaas": rule["moaas_required"] - 1}, "moaas", id="moaas-not-back"
        ),
        pytest.param(lambda rule: {"escort_present": False}, "escort_present", id="no-escort"),
        pytest.param(
            lambda rule: {"no_driving_instruction_given": False},
            "no_driving_instruction_given",
            id="no-driving-instruction-not-given",
        ),
    ]


@pytest.mark.parametrize(("values", "field"), criterion_cases())
def test_discharge_is_refused_when_a_criterion_is_not_met(
    ready_to_leave, anesthesiologist, password, values, field
):
    rule = ready_to_leave.rules.discharge
    if field in {"escort_present", "no_driving_instruction_given"}:
        assert rule["escort_required"] and rule["no_driving_instruction"]

    with pytest.raises(ValidationError) as caught:
        discharge(ready_to_leave, anesthesiologist, password, **values(rule))

    assert set(caught.value.message_dict) == {field}
    assert_not_discharged(ready_to_leave)


def test_an_aldrete_total_exactly_at_the_minimum_is_enough(
    ready_to_leave, anesthesiologist, password
):
    total = ready_to_leave.rules.discharge["aldrete_min"]

    discharge(ready_to_leave, anesthesiologist, password, **aldrete(total))

    assert fresh(ready_to_leave).discharge.aldrete_total == total


def test_discharge_with_a_wrong_password_records_a_failed_attempt_and_nothing_else(
    ready_to_leave, anesthesiologist
):
    with pytest.raises(ValidationError) as caught:
        discharge(ready_to_leave, anesthesiologist, "not-my-password")

    assert caught.value.message_dict == {"password": [signatures.WRONG_PASSWORD]}
    (failure,) = SignatureFailure.objects.filter(
        content_type=ContentType.objects.get_for_model(TreatmentSession),
        object_id=ready_to_leave.pk,
    )
    assert failure.user == anesthesiologist
    assert_not_discharged(ready_to_leave)


def test_a_nurse_cannot_sign_a_discharge(ready_to_leave, nurse, password):
    assert not ready_to_leave.rules.discharge["nurse_may_discharge"]

    with pytest.raises(PermissionDenied):
        discharge(ready_to_leave, nurse, password)

    assert_not_discharged(ready_to_leave)
    assert not SignatureFailure.objects.exists()


def test_a_clinician_of_another_site_cannot_sign_the_discharge(
    ready_to_leave, other_site, password
):
    stranger = UserFactory(roles=[Role.ANESTHESIOLOGIST], sites=[other_site])

    with pytest.raises(PermissionDenied):
        discharge(ready_to_leave, stranger, password)

    assert_not_discharged(ready_to_leave)


def test_the_discharge_page_is_forbidden_to_a_nurse(client, ready_to_leave, nurse, password):
    client.force_login(nurse)

    response = client.post(
        reverse("monitoring:discharge", args=[ready_to_leave.pk]),
        {**form_values(ready_to_leave), "password": password},
    )

    assert response.status_code == 403
    assert_not_discharged(ready_to_leave)


# --- Allowed: signed, then locked ----------------------------------------------------------------


def test_when_everything_holds_the_discharge_is_signed_and_the_session_locked(
    ready_to_leave, anesthesiologist, password
):
    discharge(ready_to_leave, anesthesiologist, password, notes="Walked out with her sister")

    session = fresh(ready_to_leave)
    assert session.status == TreatmentSession.Status.DISCHARGED
    assert session.discharged_at == timezone.now()
    assert session.locked_at == session.discharged_at
    (signature,) = signatures_of(session)
    assert signature.meaning == Signature.Meaning.DISCHARGED
    assert signature.signer == anesthesiologist
    assert signature.printed_name == anesthesiologist.printed_name
    assert signature.signed_at == session.discharged_at
    assert signatures.verify(signature, session) is True
    assert session.discharge.discharged_by == anesthesiologist
    assert session.discharge.notes == "Walked out with her sister"
    assert not session.checks.required().filter(satisfied_at=None, excused_reason="").exists()


def test_the_discharge_form_signs_and_locks(client, ready_to_leave, anesthesiologist, password):
    client.force_login(anesthesiologist)

    response = client.post(
        reverse("monitoring:discharge", args=[ready_to_leave.pk]),
        {**form_values(ready_to_leave), "password": password},
    )

    assert response.status_code == 302
    session = fresh(ready_to_leave)
    assert session.is_locked
    (signature,) = signatures_of(session)
    assert signatures.verify(signature, session)


@pytest.fixture
def discharged(ready_to_leave, nurse, anesthesiologist, password) -> TreatmentSession:
    # A warning left open at discharge (warnings need no acknowledgement).
    warning = next(
        r
        for r in ready_to_leave.rules.alerts
        if r.level == "warning"
        and not r.over_baseline
        and r.persistence_window_minutes is None
        and r.op == "<="
    )
    services.vitals_record(
        session=ready_to_leave,
        acting_user=nurse,
        measured_at=ready_to_leave.dose_ended_at,
        **{warning.field: int(warning.value)},
    )
    discharge(ready_to_leave, anesthesiologist, password)
    return fresh(ready_to_leave)


def snapshot(session) -> str:
    session = fresh(session)
    return signatures.canonical_json(
        {"status": session.status, "locked_at": session.locked_at, **session.signed_content()}
    )


@pytest.fixture
def before(discharged) -> str:
    return snapshot(discharged)


def assert_unchanged(session, before: str) -> None:
    assert snapshot(session) == before
    (signature,) = signatures_of(session)
    assert signatures.verify(signature, fresh(session)) is True


def post_vitals(client, session, user, **extra):
    client.force_login(user)
    return client.post(
        reverse("monitoring:vitals_new", args=[session.pk]),
        {**NORMAL, "client_token": str(uuid.uuid4())},
        **extra,
    )


def test_the_vitals_form_adds_nothing_to_a_discharged_session(client, discharged, before, nurse):
    count = discharged.vitals.count()

    response = post_vitals(client, discharged, nurse)

    assert response.status_code == 302
    assert discharged.vitals.count() == count
    assert_unchanged(discharged, before)


def test_the_vitals_form_tells_the_nurse_nothing_was_saved(client, discharged, before, nurse):
    response = post_vitals(client, discharged, nurse, follow=True)

    assert response.status_code == 200
    assert "Nothing saved: this session is not in progress." in response.content.decode()
    assert_unchanged(discharged, before)


def test_an_htmx_vitals_post_on_a_discharged_session_saves_nothing(
    client, discharged, before, nurse
):
    response = post_vitals(client, discharged, nurse, HTTP_HX_REQUEST="true")

    assert response.status_code == 204
    assert response["HX-Redirect"] == reverse("monitoring:session", args=[discharged.pk])
    assert_unchanged(discharged, before)


SERVICE_CALLS = {
    "vitals_record": lambda s, u: services.vitals_record(session=s, acting_user=u, **NORMAL),
    "observation_record": lambda s, u: services.observation_record(
        session=s, acting_user=u, kind="note", text="Late note"
    ),
    "vitals_mark_error": lambda s, u: services.vitals_mark_error(
        reading=s.vitals.first(), acting_user=u, reason="Wrong"
    ),
    "check_excuse": lambda s, u: services.check_excuse(
        check=s.checks.first(), acting_user=u, reason="Afterwards"
    ),
    "session_abort": lambda s, u: services.session_abort(session=s, acting_user=u, reason="X"),
    "dose_complete": lambda s, u: services.dose_complete(
        session=s, acting_user=u, ended_at=timezone.now()
    ),
}


@pytest.mark.parametrize("call", sorted(SERVICE_CALLS))
def test_services_refuse_to_change_a_discharged_session(discharged, before, nurse, call):
    with pytest.raises(ValidationError):
        SERVICE_CALLS[call](discharged, nurse)

    assert_unchanged(discharged, before)


def test_discharging_twice_is_refused(discharged, before, anesthesiologist, password):
    with pytest.raises(ValidationError):
        discharge(discharged, anesthesiologist, password)

    assert_unchanged(discharged, before)


def test_acknowledging_a_warning_on_a_discharged_session_is_refused_with_a_message(
    client, discharged, before, anesthesiologist
):
    warning = discharged.alerts.get(level=Alert.Level.WARNING, acknowledged_at=None)
    client.force_login(anesthesiologist)

    response = client.post(
        reverse("monitoring:alert_acknowledge", args=[warning.pk]), {"action_taken": "Noted"}
    )

    assert response.status_code == 200
    assert "discharged and locked" in response.content.decode()
    assert_unchanged(discharged, before)


def test_the_alert_service_cannot_change_a_discharged_session(discharged, before, anesthesiologist):
    warning = discharged.alerts.get(level=Alert.Level.WARNING, acknowledged_at=None)

    with pytest.raises(ValidationError):
        services.alert_acknowledge(alert=warning, acting_user=anesthesiologist, action_taken="X")

    assert_unchanged(discharged, before)


def _new_reading(session, user) -> VitalReading:
    return VitalReading(
        session=session,
        measured_at=timezone.now(),
        entered_at=timezone.now(),
        entered_by=user,
        **NORMAL,
    )


def _change(obj, **values) -> None:
    for name, value in values.items():
        setattr(obj, name, value)
    obj.save()


MODEL_SAVES = {
    "session": lambda s, u: _change(s, chair="9"),
    "session-update-fields": lambda s, u: (
        setattr(s, "chair", "9"),
        s.save(update_fields=["chair"]),
    ),
    "existing-reading": lambda s, u: _change(s.vitals.first(), sbp=111),
    "new-reading": lambda s, u: _new_reading(s, u).save(),
    "discharge": lambda s, u: _change(s.discharge, moaas=0),
    "alert": lambda s, u: _change(s.alerts.first(), message="x"),
    "check": lambda s, u: _change(s.checks.first(), label="x"),
    "dose": lambda s, u: _change(s.doses.first(), dose_mg=1),
    "observation": lambda s, u: _change(s.observations.first(), cadss_total=90),
    "new-observation": lambda s, u: Observation(
        session=s, kind="note", observed_at=timezone.now(), recorded_by=u, text="x"
    ).save(),
    "delete-session": lambda s, u: s.delete(),
    "delete-reading": lambda s, u: s.vitals.first().delete(),
}


@pytest.mark.parametrize("change", sorted(MODEL_SAVES))
def test_model_saves_raise_record_locked(discharged, before, nurse, change):
    with pytest.raises(RecordLocked):
        MODEL_SAVES[change](fresh(discharged), nurse)

    assert_unchanged(discharged, before)


BULK_UPDATES = {
    "session": lambda s: TreatmentSession.objects.filter(pk=s.pk).update(chair="9"),
    "vitals": lambda s: VitalReading.objects.filter(session=s).update(sbp=111),
    "related-vitals": lambda s: s.vitals.update(sbp=111),
    "alerts": lambda s: Alert.objects.filter(session=s).update(action_taken="x"),
    "checks": lambda s: RequiredCheck.objects.filter(session=s).update(excused_reason="x"),
    "observations": lambda s: Observation.objects.filter(session=s).update(text="x"),
    "doses": lambda s: DoseAdministration.objects.filter(session=s).update(override_reason="x"),
    "discharge": lambda s: Discharge.objects.filter(session=s).update(moaas=0),
    "delete-vitals": lambda s: VitalReading.objects.filter(session=s).delete(),
    "delete-sessions": lambda s: TreatmentSession.objects.filter(pk=s.pk).delete(),
}


@pytest.mark.parametrize("change", sorted(BULK_UPDATES))
def test_queryset_updates_raise_record_locked(discharged, before, change):
    with pytest.raises(RecordLocked):
        BULK_UPDATES[change](discharged)

    assert_unchanged(discharged, before)


def raw_insert_reading(session, user) -> None:
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    token = VitalReading._meta.get_field("client_token").get_db_prep_value(uuid.uuid4(), connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {VitalReading._meta.db_table} "  # noqa: S608 - table name from the model
            "(session_id, measured_at, entered_at, entered_by_id, client_token, is_predose, "
            "error_reason, sbp) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [session.pk, now, now, user.pk, token, False, "", 120],
        )


RAW_SQL = {
    "update-session": (
        f"UPDATE {TreatmentSession._meta.db_table} SET chair = %s WHERE id = %s",  # noqa: S608
        lambda s: ["9", s.pk],
    ),
    "update-vitals": (
        f"UPDATE {VitalReading._meta.db_table} SET sbp = %s WHERE session_id = %s",  # noqa: S608
        lambda s: [111, s.pk],
    ),
    "update-discharge": (
        f"UPDATE {Discharge._meta.db_table} SET moaas = %s WHERE session_id = %s",  # noqa: S608
        lambda s: [0, s.pk],
    ),
    "update-checks": (
        f"UPDATE {RequiredCheck._meta.db_table} SET excused_reason = %s "  # noqa: S608
        "WHERE session_id = %s",
        lambda s: ["x", s.pk],
    ),
}


@pytest.mark.parametrize("statement", sorted(RAW_SQL))
def test_raw_sql_updates_are_refused_by_the_database(discharged, before, statement):
    sql, params = RAW_SQL[statement]

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params(discharged))

    assert_unchanged(discharged, before)


def test_a_raw_sql_insert_of_a_child_is_refused_by_the_database(discharged, before, nurse):
    with pytest.raises(DatabaseError), transaction.atomic():
        raw_insert_reading(discharged, nurse)

    assert_unchanged(discharged, before)


def test_the_same_raw_insert_works_on_a_session_in_progress(dosing, nurse):
    count = dosing.vitals.count()

    raw_insert_reading(dosing, nurse)

    assert dosing.vitals.count() == count + 1


def test_the_base_manager_bulk_update_is_refused_by_the_database(discharged, before):
    """`_base_manager` is a plain Manager: only the trigger stands behind it."""
    with pytest.raises(DatabaseError), transaction.atomic():
        TreatmentSession._base_manager.filter(pk=discharged.pk).update(chair="9")
    with pytest.raises(DatabaseError), transaction.atomic():
        VitalReading._base_manager.filter(session=discharged).update(sbp=111)

    assert_unchanged(discharged, before)


# --- The admin ---------------------------------------------------------------------------------


@pytest.fixture
def superuser(site):
    return UserFactory(username="root", is_superuser=True, is_staff=True, sites=[site])


def admin_change_url(session) -> str:
    return reverse("admin:monitoring_treatmentsession_change", args=[session.pk])


def test_the_admin_change_view_refuses_a_superuser_post_with_403(
    client, discharged, before, superuser
):
    client.force_login(superuser)

    response = client.post(admin_change_url(discharged), {"chair": "9", "status": "monitoring"})

    assert response.status_code == 403
    assert_unchanged(discharged, before)


def test_the_admin_shows_a_discharged_session_read_only(client, discharged, superuser):
    client.force_login(superuser)

    response = client.get(admin_change_url(discharged))

    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    assert response.context["has_delete_permission"] is False
