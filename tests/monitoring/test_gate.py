"""The start gate (SPEC §G3) and the dose record (§M2).

Each condition of the gate is broken on its own, on a session that otherwise passes, and must
block `services.dose_record` with its own name; the check-in page lists every condition, met or
not. The dose rules (mg/kg from a recent weight, the allowed range and its override, volume and
concentration, the lot) are read from the session's protocol version, never restated here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from monitoring import gates, services
from monitoring.models import (
    ControlledSubstanceEntry,
    DoseAdministration,
    DrugLot,
    TreatmentSession,
)
from patients import services as patient_services
from patients.models import ConsentKind
from protocols import services as protocol_services
from protocols.models import TreatmentCourse
from tests.factories import ConsentRecordFactory, ConsentTemplateFactory
from tests.protocols.conftest import complete_fields

pytestmark = pytest.mark.django_db

NORMAL = {"sbp": 125, "dbp": 80, "hr": 70, "rr": 14, "spo2": 98, "moaas": 5}
HIGH_RISK_CSSRS = {
    "q1": True,
    "q2": True,
    "q3": True,
    "q4": True,
    "q5": False,
    "q6": False,
    "q6_recent": None,
}
KETAMINE_CONSENT = f"consent:{ConsentKind.KETAMINE_TREATMENT.value}"
REMS_CONSENT = f"consent:{ConsentKind.ESKETAMINE_REMS.value}"
CENT = Decimal("0.01")


# --- Helpers ------------------------------------------------------------------------------------


def fresh(session: TreatmentSession) -> TreatmentSession:
    return TreatmentSession.objects.select_related("course__protocol_version", "patient").get(
        pk=session.pk
    )


def sign_assessment(course, *, nurse, psychiatrist, password, approve=True, **overrides):
    draft = protocol_services.assessment_create(course=course, acting_user=nurse)
    protocol_services.assessment_update(
        assessment=draft, acting_user=nurse, **complete_fields(course, **overrides)
    )
    protocol_services.assessment_submit(assessment=draft, acting_user=nurse)
    return protocol_services.assessment_sign(
        assessment=draft, signer=psychiatrist, password=password, approve=approve
    )


def start_session(course, *, nurse, anesthesiologist, escort=True, vitals=NORMAL):
    """Schedule, check in and (unless `vitals` is None) record pre-dose vitals."""
    session = services.session_schedule(
        course=course,
        acting_user=nurse,
        scheduled_at=timezone.now(),
        chair="4",
        supervising_clinician=anesthesiologist,
    )
    session = services.session_check_in(
        session=session,
        acting_user=nurse,
        escort_confirmed=escort,
        escort_details="Sister, by car" if escort else "",
    )
    if vitals is not None:
        services.vitals_record(session=session, acting_user=nurse, **vitals)
    return fresh(session)


def iv_dose(session: TreatmentSession, lot: DrugLot, mg_per_kg=None) -> dict:
    """An IV dose at `mg_per_kg` (default: the protocol's), with the matching volume."""
    dose = session.rules.dose
    per_kg = Decimal(str(dose["default_mg_per_kg"] if mg_per_kg is None else mg_per_kg))
    dose_mg = (Decimal(str(session.patient.weight_kg)) * per_kg).quantize(CENT)
    return {"dose_mg": dose_mg, "volume_ml": (dose_mg / lot.concentration_mg_per_ml).quantize(CENT)}


def record_dose(session, *, nurse, psychiatrist, lot, **overrides):
    values = overrides if "dose_mg" in overrides else {**iv_dose(session, lot), **overrides}
    return services.dose_record(
        session=session,
        acting_user=nurse,
        lot=lot,
        started_at=timezone.now(),
        prescriber=psychiatrist,
        **values,
    )


def register_kinds(lot: DrugLot) -> list[str]:
    return list(ControlledSubstanceEntry.objects.filter(lot=lot).values_list("kind", flat=True))


def assert_nothing_dosed(session: TreatmentSession, lot: DrugLot) -> None:
    session = fresh(session)
    assert session.status == TreatmentSession.Status.CHECKED_IN
    assert session.dose_started_at is None
    assert not DoseAdministration.objects.filter(session=session).exists()
    assert not session.checks.exists()
    assert register_kinds(lot) == [ControlledSubstanceEntry.Kind.RECEIPT]


def unmet_codes(session: TreatmentSession) -> set[str]:
    return {c.code for c in gates.start_gate(fresh(session)) if not c.met}


def field_errors(caught) -> dict[str, list[str]]:
    return caught.value.message_dict


def matching_value(rule) -> Decimal:
    """The value one step inside a (non-equality) rule: `>` 140 → 141, `<` 90 → 89."""
    step = Decimal(1)
    return rule.value + step if rule.op in {">", ">="} else rule.value - step


# --- Arrangements: a session where exactly one start condition fails ----------------------------


def _fixtures(request, *names):
    return [request.getfixturevalue(name) for name in names]


def no_consent(request):
    course, nurse, psychiatrist, anesthesiologist, password = _fixtures(
        request, "course", "nurse", "psychiatrist", "anesthesiologist", "password"
    )
    sign_assessment(course, nurse=nurse, psychiatrist=psychiatrist, password=password)
    return start_session(course, nurse=nurse, anesthesiologist=anesthesiologist)


def withdrawn_consent(request):
    session, consent, nurse = _fixtures(request, "ready", "consented", "nurse")
    patient_services.consent_withdraw(
        consent=consent, acting_user=nurse, reason="Patient changed their mind"
    )
    return session


def expired_consent(request):
    course, patient, nurse, psychiatrist, anesthesiologist, password = _fixtures(
        request, "course", "patient", "nurse", "psychiatrist", "anesthesiologist", "password"
    )
    template = ConsentTemplateFactory(kind=ConsentKind.KETAMINE_TREATMENT, created_by=nurse)
    signed_at = timezone.now() - timedelta(days=10)
    patient_services.consent_record(
        patient=patient,
        template=template,
        acting_user=nurse,
        signature_method="tablet",
        signed_at=signed_at,
        valid_until=timezone.localdate() - timedelta(days=1),
    )
    sign_assessment(course, nurse=nurse, psychiatrist=psychiatrist, password=password)
    return start_session(course, nurse=nurse, anesthesiologist=anesthesiologist)


def no_approved_assessment(request):
    # Only an approval makes a course active, so the course condition fails with it.
    course, nurse, anesthesiologist, _consent = _fixtures(
        request, "course", "nurse", "anesthesiologist", "consented"
    )
    return start_session(course, nurse=nurse, anesthesiologist=anesthesiologist)


def declined_after_approval(request):
    session, course, nurse, psychiatrist, password = _fixtures(
        request, "ready", "approved_course", "nurse", "psychiatrist", "password"
    )
    sign_assessment(
        course, nurse=nurse, psychiatrist=psychiatrist, password=password, approve=False
    )
    return session


def approval_too_old(request):
    course, patient, nurse, psychiatrist, anesthesiologist, password, time_machine = _fixtures(
        request,
        "course",
        "patient",
        "nurse",
        "psychiatrist",
        "anesthesiologist",
        "password",
        "time_machine",
    )
    validity = course.protocol_version.parsed.assessment_validity_days
    # A consent that outlives the assessment, so that only the assessment goes stale.
    template = ConsentTemplateFactory(
        kind=ConsentKind.KETAMINE_TREATMENT, created_by=nurse, validity_days=validity * 3
    )
    patient_services.consent_record(
        patient=patient, template=template, acting_user=nurse, signature_method="tablet"
    )
    sign_assessment(course, nurse=nurse, psychiatrist=psychiatrist, password=password)
    time_machine.move_to(timezone.now() + timedelta(days=validity, minutes=1))
    return start_session(course, nurse=nurse, anesthesiologist=anesthesiologist)


def course_paused(request):
    session, course, psychiatrist = _fixtures(request, "ready", "approved_course", "psychiatrist")
    protocol_services.course_set_status(
        course=course, acting_user=psychiatrist, status="paused", reason="Patient travelling"
    )
    return session


def escort_not_confirmed(request):
    course, nurse, anesthesiologist = _fixtures(
        request, "approved_course", "nurse", "anesthesiologist"
    )
    return start_session(course, nurse=nurse, anesthesiologist=anesthesiologist, escort=False)


def no_predose_vitals(request):
    (session,) = _fixtures(request, "checked_in")
    return session


def predose_vitals_too_old(request):
    session, time_machine = _fixtures(request, "ready", "time_machine")
    max_age = session.rules.dose["predose_vitals_max_age_minutes"]
    reading = session.vitals.get()
    time_machine.move_to(reading.measured_at + timedelta(minutes=max_age, seconds=1), tick=False)
    return session


def predose_bp_above_limit(request):
    session, nurse = _fixtures(request, "checked_in", "nurse")
    for rule in session.rules.predose_alerts:
        values = {**NORMAL, rule.field: int(matching_value(rule))}
        services.vitals_record(session=session, acting_user=nurse, **values)
    return session


def predose_bp_deferred(request):
    session = predose_bp_above_limit(request)
    (psychiatrist,) = _fixtures(request, "psychiatrist")
    services.predose_decide(
        session=session, acting_user=psychiatrist, decision="defer", reason="Recheck next week"
    )
    return session


def high_suicide_risk_after_approval(request):
    """The approved patient's new assessment (submitted, awaiting sign-off) screens C-SSRS high."""
    session, course, nurse = _fixtures(request, "ready", "approved_course", "nurse")
    draft = protocol_services.assessment_create(course=course, acting_user=nurse)
    protocol_services.assessment_update(
        assessment=draft,
        acting_user=nurse,
        **complete_fields(course, cssrs_answers=HIGH_RISK_CSSRS),
    )
    protocol_services.assessment_submit(assessment=draft, acting_user=nurse)
    return session


GATE_CASES = [
    pytest.param(no_consent, {KETAMINE_CONSENT}, "Consent is not signed.", id="no-consent"),
    pytest.param(
        withdrawn_consent, {KETAMINE_CONSENT}, "Consent is withdrawn.", id="withdrawn-consent"
    ),
    pytest.param(expired_consent, {KETAMINE_CONSENT}, "Consent is expired.", id="expired-consent"),
    pytest.param(
        no_approved_assessment,
        {"assessment", "course"},
        "No signed pre-treatment assessment.",
        id="no-approved-assessment",
    ),
    pytest.param(
        declined_after_approval,
        {"assessment"},
        "The latest signed assessment was not approved.",
        id="declined-after-approval",
    ),
    pytest.param(approval_too_old, {"assessment"}, "reassess", id="approval-too-old"),
    pytest.param(course_paused, {"course"}, "Course is paused.", id="course-paused"),
    pytest.param(
        escort_not_confirmed,
        {"escort"},
        "Confirm at check-in who takes the patient home.",
        id="escort-not-confirmed",
    ),
    pytest.param(
        no_predose_vitals, {"predose-vitals"}, "Record a complete set", id="no-predose-vitals"
    ),
    pytest.param(
        predose_vitals_too_old,
        {"predose-vitals"},
        "record a new one",
        id="predose-vitals-too-old",
    ),
    pytest.param(
        predose_bp_above_limit,
        {"predose-decision"},
        "the prescriber decides to proceed or defer",
        id="predose-bp-high-no-decision",
    ),
    pytest.param(
        predose_bp_deferred,
        {"predose-decision"},
        "Deferred by the prescriber.",
        id="predose-bp-deferred",
    ),
    pytest.param(
        high_suicide_risk_after_approval,
        {"suicide-risk"},
        "is high risk",
        id="high-cssrs-after-approval",
    ),
]


@pytest.mark.parametrize(("arrange", "failing", "detail"), GATE_CASES)
def test_each_start_condition_failing_alone_blocks_dosing_with_its_own_message(
    request, arrange, failing, detail, nurse, psychiatrist, ketamine_lot
):
    session = arrange(request)
    conditions = gates.start_gate(fresh(session))
    unmet = [c for c in conditions if not c.met]

    assert {c.code for c in unmet} == failing
    assert any(detail in c.detail for c in unmet), [c.detail for c in unmet]
    with pytest.raises(ValidationError) as caught:
        record_dose(fresh(session), nurse=nurse, psychiatrist=psychiatrist, lot=ketamine_lot)

    assert caught.value.code == "gate"
    (message,) = caught.value.messages
    for condition in conditions:
        assert (condition.label in message) is (not condition.met), condition.code
    assert_nothing_dosed(session, ketamine_lot)


def test_a_declined_assessment_with_high_cssrs_names_the_suicide_risk(
    ready, approved_course, nurse, psychiatrist, password, ketamine_lot
):
    sign_assessment(
        approved_course,
        nurse=nurse,
        psychiatrist=psychiatrist,
        password=password,
        approve=False,
        cssrs_answers=HIGH_RISK_CSSRS,
    )

    assert unmet_codes(ready) == {"assessment", "suicide-risk"}
    with pytest.raises(ValidationError) as caught:
        record_dose(fresh(ready), nurse=nurse, psychiatrist=psychiatrist, lot=ketamine_lot)
    assert "No open high suicide risk" in caught.value.messages[0]
    assert_nothing_dosed(ready, ketamine_lot)


def test_with_every_condition_met_the_dose_is_recorded_and_dosing_starts(
    ready, nurse, psychiatrist, ketamine_lot
):
    assert all(c.met for c in gates.start_gate(ready))

    dose = record_dose(ready, nurse=nurse, psychiatrist=psychiatrist, lot=ketamine_lot)

    session = fresh(ready)
    assert session.status == TreatmentSession.Status.DOSING
    assert session.dose_started_at == dose.started_at
    assert session.checks.exists()
    assert register_kinds(ketamine_lot) == ["receipt", "administration"]


def test_a_proceed_decision_on_raised_predose_bp_opens_the_gate(
    request, nurse, psychiatrist, ketamine_lot
):
    session = predose_bp_above_limit(request)
    services.predose_decide(
        session=session, acting_user=psychiatrist, decision="proceed", reason="Anxious; rechecked"
    )

    assert unmet_codes(session) == set()
    record_dose(fresh(session), nurse=nurse, psychiatrist=psychiatrist, lot=ketamine_lot)
    assert fresh(session).status == TreatmentSession.Status.DOSING


@pytest.mark.parametrize("rule_index", [0, 1], ids=["sbp", "dbp"])
def test_predose_bp_exactly_at_the_limit_needs_no_decision(checked_in, nurse, rule_index):
    rule = checked_in.rules.predose_alerts[rule_index]
    assert rule.op == ">"  # the limit itself is allowed ("above 140")
    services.vitals_record(
        session=checked_in, acting_user=nurse, **{**NORMAL, rule.field: int(rule.value)}
    )

    assert unmet_codes(checked_in) == set()


def test_predose_vitals_exactly_at_the_maximum_age_still_count(ready, time_machine):
    max_age = ready.rules.dose["predose_vitals_max_age_minutes"]
    reading = ready.vitals.get()
    time_machine.move_to(reading.measured_at + timedelta(minutes=max_age), tick=False)

    assert unmet_codes(ready) == set()


def test_an_approval_just_short_of_its_validity_still_counts(
    course, patient, nurse, psychiatrist, anesthesiologist, password, time_machine
):
    validity = course.protocol_version.parsed.assessment_validity_days
    template = ConsentTemplateFactory(
        kind=ConsentKind.KETAMINE_TREATMENT, created_by=nurse, validity_days=validity * 3
    )
    patient_services.consent_record(
        patient=patient, template=template, acting_user=nurse, signature_method="tablet"
    )
    approval = sign_assessment(course, nurse=nurse, psychiatrist=psychiatrist, password=password)
    time_machine.move_to(approval.signed_at + timedelta(days=validity, minutes=-30))

    session = start_session(course, nurse=nurse, anesthesiologist=anesthesiologist)

    assert unmet_codes(session) == set()


def test_a_vitals_reading_marked_in_error_does_not_count_as_predose_vitals(ready, nurse):
    services.vitals_mark_error(reading=ready.vitals.get(), acting_user=nurse, reason="Wrong chair")

    assert unmet_codes(ready) == {"predose-vitals"}


# --- The check-in page --------------------------------------------------------------------------

CONDITION_ROW = re.compile(r'data-condition="([^"]+)" data-met="(yes|no)"')
CONDITION_STATE = re.compile(r"</strong> — (met|not met)")


@pytest.mark.parametrize("fixture", ["scheduled", "checked_in", "ready"])
def test_the_check_in_page_lists_every_start_condition_met_or_not(request, client, nurse, fixture):
    session = request.getfixturevalue(fixture)
    client.force_login(nurse)

    response = client.get(reverse("monitoring:check_in", args=[session.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    conditions = gates.start_gate(fresh(session))
    assert dict(CONDITION_ROW.findall(html)) == {
        c.code: "yes" if c.met else "no" for c in conditions
    }
    assert CONDITION_STATE.findall(html) == ["met" if c.met else "not met" for c in conditions]
    for condition in conditions:
        assert escape(condition.label) in html
        if not condition.met and condition.detail:
            assert escape(condition.detail) in html


def test_the_check_in_page_shows_the_unconfirmed_escort_and_missing_vitals_as_not_met(
    client, nurse, scheduled
):
    client.force_login(nurse)

    html = client.get(reverse("monitoring:check_in", args=[scheduled.pk])).content.decode()

    rows = dict(CONDITION_ROW.findall(html))
    assert {code for code, met in rows.items() if met == "no"} == {"escort", "predose-vitals"}


# --- Esketamine: the REMS enrollment ------------------------------------------------------------


@pytest.fixture
def esketamine_course(patient, esketamine_protocol, nurse, psychiatrist, password):
    course = protocol_services.course_start(
        patient=patient,
        protocol=esketamine_protocol,
        acting_user=nurse,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=psychiatrist,
        planned_sessions=8,
    )
    sign_assessment(course, nurse=nurse, psychiatrist=psychiatrist, password=password)
    course.refresh_from_db()
    return course


@pytest.fixture
def rems_template(nurse):
    return ConsentTemplateFactory(kind=ConsentKind.ESKETAMINE_REMS, created_by=nurse)


@pytest.fixture
def esketamine_lot(site, nurse) -> DrugLot:
    return services.lot_receive(
        site=site,
        acting_user=nurse,
        drug="esketamine",
        lot_number="ESK-TEST-1",
        concentration_mg_per_ml=Decimal("140"),
        expires_on=timezone.localdate() + timedelta(days=365),
        received_mg=Decimal("840"),
    )


def intranasal_dose(session: TreatmentSession, lot: DrugLot) -> dict:
    dose_mg = Decimal(str(session.rules.dose["allowed_mg"][0]))
    return {"dose_mg": dose_mg, "volume_ml": (dose_mg / lot.concentration_mg_per_ml).quantize(CENT)}


def test_esketamine_opens_with_a_rems_enrollment_cosigned_by_the_prescriber(
    esketamine_course,
    rems_template,
    esketamine_lot,
    patient,
    nurse,
    psychiatrist,
    anesthesiologist,
):
    patient_services.consent_record(
        patient=patient,
        template=rems_template,
        acting_user=nurse,
        signature_method="tablet",
        prescriber=psychiatrist,
    )
    session = start_session(esketamine_course, nurse=nurse, anesthesiologist=anesthesiologist)

    conditions = {c.code: c.met for c in gates.start_gate(session)}
    assert conditions["rems"] is True
    assert conditions[REMS_CONSENT] is True
    assert all(conditions.values())

    dose = record_dose(
        session,
        nurse=nurse,
        psychiatrist=psychiatrist,
        lot=esketamine_lot,
        **intranasal_dose(session, esketamine_lot),
    )
    device_mg = Decimal(str(session.rules.dose["device_mg"]))
    assert dose.route == DoseAdministration.Route.INTRANASAL
    assert dose.devices == dose.dose_mg / device_mg


def test_esketamine_rems_consent_without_the_prescriber_blocks_only_the_rems_condition(
    esketamine_course,
    rems_template,
    esketamine_lot,
    patient,
    nurse,
    psychiatrist,
    anesthesiologist,
):
    # A record without the prescriber's co-signature (e.g. imported from paper): the consent
    # service refuses to create one, the gate must not rely on that.
    ConsentRecordFactory(patient=patient, template=rems_template, witness=nurse, prescriber=None)
    session = start_session(esketamine_course, nurse=nurse, anesthesiologist=anesthesiologist)

    assert unmet_codes(session) == {"rems"}
    with pytest.raises(ValidationError) as caught:
        record_dose(
            session,
            nurse=nurse,
            psychiatrist=psychiatrist,
            lot=esketamine_lot,
            **intranasal_dose(session, esketamine_lot),
        )
    assert "REMS enrollment recorded" in caught.value.messages[0]
    assert_nothing_dosed(session, esketamine_lot)


def test_esketamine_without_any_rems_enrollment_fails_consent_and_rems(
    esketamine_course, esketamine_lot, nurse, psychiatrist, anesthesiologist
):
    session = start_session(esketamine_course, nurse=nurse, anesthesiologist=anesthesiologist)

    assert unmet_codes(session) == {REMS_CONSENT, "rems"}
    with pytest.raises(ValidationError):
        record_dose(
            session,
            nurse=nurse,
            psychiatrist=psychiatrist,
            lot=esketamine_lot,
            **intranasal_dose(session, esketamine_lot),
        )
    assert_nothing_dosed(session, esketamine_lot)


def test_the_iv_protocol_has_no_rems_condition(ready):
    assert "rems" not in {c.code for c in gates.start_gate(ready)}


# --- Dose rules (§M2) ---------------------------------------------------------------------------


def set_weight_age(patient, nurse, days: int) -> None:
    patient_services.patient_update(
        patient=patient,
        acting_user=nurse,
        weight_measured_on=timezone.localdate() - timedelta(days=days),
    )


def test_an_iv_dose_stores_mg_per_kg_from_the_recent_weight(
    ready, nurse, psychiatrist, ketamine_lot
):
    per_kg = Decimal(str(ready.rules.dose["default_mg_per_kg"]))

    dose = record_dose(ready, nurse=nurse, psychiatrist=psychiatrist, lot=ketamine_lot)

    dose.refresh_from_db()
    assert dose.weight_kg == ready.patient.weight_kg
    assert dose.weight_measured_on == ready.patient.weight_measured_on
    assert dose.dose_mg_per_kg == per_kg
    assert dose.dose_mg == (dose.weight_kg * per_kg).quantize(CENT)
    assert dose.route == DoseAdministration.Route.IV


def test_a_weight_exactly_at_the_maximum_age_is_accepted(
    ready, patient, nurse, psychiatrist, ketamine_lot
):
    set_weight_age(patient, nurse, ready.rules.dose["weight_max_age_days"])

    dose = record_dose(fresh(ready), nurse=nurse, psychiatrist=psychiatrist, lot=ketamine_lot)

    assert dose.dose_mg_per_kg is not None


def test_an_iv_dose_is_refused_with_a_weight_older_than_the_maximum_age(
    ready, patient, nurse, psychiatrist, ketamine_lot
):
    max_age = ready.rules.dose["weight_max_age_days"]
    set_weight_age(patient, nurse, max_age + 1)

    with pytest.raises(ValidationError) as caught:
        record_dose(fresh(ready), nurse=nurse, psychiatrist=psychiatrist, lot=ketamine_lot)

    assert f"last {max_age} days" in field_errors(caught)["dose_mg"][0]
    assert_nothing_dosed(ready, ketamine_lot)


def test_an_iv_dose_is_refused_without_any_weight(
    ready, patient, nurse, psychiatrist, ketamine_lot
):
    patient_services.patient_update(
        patient=patient, acting_user=nurse, weight_kg=None, weight_measured_on=None
    )

    with pytest.raises(ValidationError) as caught:
        record_dose(
            fresh(ready),
            nurse=nurse,
            psychiatrist=psychiatrist,
            lot=ketamine_lot,
            dose_mg=Decimal("35"),
            volume_ml=Decimal("3.5"),
        )

    assert "dose_mg" in field_errors(caught)
    assert_nothing_dosed(ready, ketamine_lot)


@pytest.mark.parametrize("bound", [0, 1], ids=["lowest", "highest"])
def test_an_iv_dose_at_either_end_of_the_allowed_range_needs_no_override(
    ready, nurse, psychiatrist, ketamine_lot, bound
):
    per_kg = ready.rules.dose["allowed_mg_per_kg"][bound]

    dose = record_dose(
        ready,
        nurse=nurse,
        psychiatrist=psychiatrist,
        lot=ketamine_lot,
        **iv_dose(ready, ketamine_lot, per_kg),
    )

    assert dose.dose_mg_per_kg == Decimal(str(per_kg))
    assert dose.override_reason == ""


def outside_range(session, side: str) -> Decimal:
    low, high = (Decimal(str(v)) for v in session.rules.dose["allowed_mg_per_kg"])
    return low - Decimal("0.1") if side == "below" else high + Decimal("0.1")


@pytest.mark.parametrize("side", ["below", "above"])
def test_an_iv_dose_outside_the_allowed_range_is_refused_without_an_override_reason(
    ready, nurse, psychiatrist, ketamine_lot, side
):
    with pytest.raises(ValidationError) as caught:
        record_dose(
            ready,
            nurse=nurse,
            psychiatrist=psychiatrist,
            lot=ketamine_lot,
            override_reason="   ",
            **iv_dose(ready, ketamine_lot, outside_range(ready, side)),
        )

    assert "override reason is required" in field_errors(caught)["override_reason"][0]
    assert_nothing_dosed(ready, ketamine_lot)


@pytest.mark.parametrize("side", ["below", "above"])
def test_an_iv_dose_outside_the_allowed_range_is_accepted_with_an_override_reason(
    ready, nurse, psychiatrist, ketamine_lot, side
):
    per_kg = outside_range(ready, side)

    dose = record_dose(
        ready,
        nurse=nurse,
        psychiatrist=psychiatrist,
        lot=ketamine_lot,
        override_reason="  Partial response at the usual dose  ",
        **iv_dose(ready, ketamine_lot, per_kg),
    )

    assert dose.dose_mg_per_kg == per_kg
    assert dose.override_reason == "Partial response at the usual dose"
    assert fresh(ready).status == TreatmentSession.Status.DOSING


def test_a_volume_inconsistent_with_the_concentration_is_refused(
    ready, nurse, psychiatrist, ketamine_lot
):
    values = iv_dose(ready, ketamine_lot)
    values["volume_ml"] += Decimal("1")

    with pytest.raises(ValidationError) as caught:
        record_dose(ready, nurse=nurse, psychiatrist=psychiatrist, lot=ketamine_lot, **values)

    expected = (values["dose_mg"] / ketamine_lot.concentration_mg_per_ml).quantize(CENT)
    assert f"{expected} mL" in field_errors(caught)["volume_ml"][0]
    assert_nothing_dosed(ready, ketamine_lot)


def test_an_expired_lot_is_refused(ready, site, nurse, psychiatrist, ketamine_lot):
    expired = services.lot_receive(
        site=site,
        acting_user=nurse,
        drug="ketamine",
        lot_number="KET-EXPIRED",
        concentration_mg_per_ml=ketamine_lot.concentration_mg_per_ml,
        expires_on=timezone.localdate() - timedelta(days=1),
        received_mg=Decimal("500"),
    )

    with pytest.raises(ValidationError) as caught:
        record_dose(ready, nurse=nurse, psychiatrist=psychiatrist, lot=expired)

    assert field_errors(caught)["lot"] == ["This lot has expired."]
    assert_nothing_dosed(ready, expired)


def test_a_lot_expiring_today_is_still_usable(ready, site, nurse, psychiatrist, ketamine_lot):
    today = services.lot_receive(
        site=site,
        acting_user=nurse,
        drug="ketamine",
        lot_number="KET-TODAY",
        concentration_mg_per_ml=ketamine_lot.concentration_mg_per_ml,
        expires_on=timezone.localdate(),
        received_mg=Decimal("500"),
    )

    record_dose(ready, nurse=nurse, psychiatrist=psychiatrist, lot=today)

    assert register_kinds(today) == ["receipt", "administration"]


def test_another_sites_lot_is_refused(ready, other_site, outsider, nurse, psychiatrist):
    elsewhere = services.lot_receive(
        site=other_site,
        acting_user=outsider,
        drug="ketamine",
        lot_number="KET-HARBOUR",
        concentration_mg_per_ml=Decimal("10"),
        expires_on=timezone.localdate() + timedelta(days=100),
        received_mg=Decimal("500"),
    )

    with pytest.raises(ValidationError) as caught:
        record_dose(ready, nurse=nurse, psychiatrist=psychiatrist, lot=elsewhere)

    assert "held at this site" in field_errors(caught)["lot"][0]
    assert_nothing_dosed(ready, elsewhere)


def test_a_lot_of_the_other_drug_is_refused(ready, nurse, psychiatrist, site):
    wrong_drug = services.lot_receive(
        site=site,
        acting_user=nurse,
        drug="esketamine",
        lot_number="ESK-1",
        concentration_mg_per_ml=Decimal("10"),
        expires_on=timezone.localdate() + timedelta(days=100),
        received_mg=Decimal("500"),
    )

    with pytest.raises(ValidationError) as caught:
        record_dose(ready, nurse=nurse, psychiatrist=psychiatrist, lot=wrong_drug)

    assert "lot" in field_errors(caught)
    assert_nothing_dosed(ready, wrong_drug)


def test_the_prescriber_must_be_a_psychiatrist_of_the_site(
    ready, nurse, anesthesiologist, ketamine_lot
):
    with pytest.raises(ValidationError) as caught:
        record_dose(ready, nurse=nurse, psychiatrist=anesthesiologist, lot=ketamine_lot)

    assert "prescriber" in field_errors(caught)
    assert_nothing_dosed(ready, ketamine_lot)


def test_an_intranasal_dose_must_be_whole_devices_within_the_allowed_range(
    esketamine_course,
    rems_template,
    esketamine_lot,
    patient,
    nurse,
    psychiatrist,
    anesthesiologist,
):
    patient_services.consent_record(
        patient=patient,
        template=rems_template,
        acting_user=nurse,
        signature_method="tablet",
        prescriber=psychiatrist,
    )
    session = start_session(esketamine_course, nurse=nurse, anesthesiologist=anesthesiologist)
    dose = session.rules.dose
    device = Decimal(str(dose["device_mg"]))
    for dose_mg in (
        Decimal(str(dose["allowed_mg"][0])) + device / 2,  # half a device
        Decimal(str(dose["allowed_mg"][1])) + device,  # one device too many
    ):
        volume = (dose_mg / esketamine_lot.concentration_mg_per_ml).quantize(CENT)
        with pytest.raises(ValidationError) as caught:
            record_dose(
                session,
                nurse=nurse,
                psychiatrist=psychiatrist,
                lot=esketamine_lot,
                dose_mg=dose_mg,
                volume_ml=volume,
            )
        assert "dose_mg" in field_errors(caught)
    assert_nothing_dosed(session, esketamine_lot)


def test_a_dose_cannot_start_before_the_predose_vitals_it_was_cleared_on(
    checked_in, nurse, psychiatrist, ketamine_lot, time_machine
):
    time_machine.move_to(checked_in.checked_in_at + timedelta(minutes=10), tick=False)
    vitals = services.vitals_record(session=checked_in, acting_user=nurse, **NORMAL)
    time_machine.move_to(vitals.measured_at + timedelta(minutes=5), tick=False)

    with pytest.raises(ValidationError) as caught:
        services.dose_record(
            session=fresh(checked_in),
            acting_user=nurse,
            lot=ketamine_lot,
            started_at=vitals.measured_at - timedelta(minutes=5),
            prescriber=psychiatrist,
            **iv_dose(fresh(checked_in), ketamine_lot),
        )

    assert "started_at" in field_errors(caught)
    assert_nothing_dosed(checked_in, ketamine_lot)
