"""A small clinic month, counted by hand: each kind of violation at least once, compliant cases,
and rows that must not count (another site, outside the range, not judged yet).

Site `Northside` (Europe/London, GMT in March 2025), range 3–16 March 2025, now 20 March 12:00.
One IV-ketamine patient (P1) goes through the real services: consent, approval, dosing, every
check on time, discharge, the follow-up plan, a next-day call. Everything else is written with
explicit times (tests/compliance/builders.py). The expected figures are in `world.expected`.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.utils import timezone

from audit.models import Finding, VerificationRun
from clinic.models import Role, Signature
from followups import services as followup_services
from followups.models import FollowUp
from monitoring import services as monitoring_services
from monitoring.models import Incident, TreatmentSession
from patients import services as patient_services
from patients.models import ConsentKind
from protocols import services as protocol_services
from protocols.models import Protocol, TreatmentCourse
from tests.compliance import builders as b
from tests.compliance.builders import at
from tests.factories import ConsentTemplateFactory, PatientFactory, UserFactory
from tests.protocols.conftest import complete_fields

NOW = at(20, 12)
RANGE = {"start": "2025-03-03", "end": "2025-03-16"}


@pytest.fixture
def versions(db) -> SimpleNamespace:
    return SimpleNamespace(
        iv=Protocol.objects.get(slug="iv-ketamine").versions.published().latest("version"),
        esk=Protocol.objects.get(slug="esketamine-rems").versions.published().latest("version"),
    )


@pytest.fixture
def templates(administrator) -> SimpleNamespace:
    def template(kind, version, published, **extra):
        return ConsentTemplateFactory(
            kind=kind,
            version=version,
            created_by=administrator,
            published_at=published,
            **extra,
        )

    return SimpleNamespace(
        k1=template(ConsentKind.KETAMINE_TREATMENT, 1, at(1, 0, month=1, year=2024)),
        # Requires re-consent from 10 March: v1 consents are superseded for later doses.
        k2=template(ConsentKind.KETAMINE_TREATMENT, 2, at(10, 0), requires_reconsent=True),
        e1=template(ConsentKind.ESKETAMINE_REMS, 1, at(1, 0, month=1, year=2024)),
    )


def _run_p1_through_the_services(
    world: SimpleNamespace, *, time_machine, nurse, psychiatrist, anesthesiologist, password
) -> None:
    """P1: consent 1 Feb, approval 1 Mar, IV session 4 Mar with every check on time, discharged
    at the end of the minimum observation, next-day call done in its window."""
    site = world.site
    time_machine.move_to(at(1, 9, month=2), tick=False)
    patient = PatientFactory(home_site=site, created_by=nurse, mrn="P1")
    patient_services.consent_record(
        patient=patient, template=world.templates.k1, acting_user=nurse, signature_method="tablet"
    )
    time_machine.move_to(at(1, 9), tick=False)
    course = protocol_services.course_start(
        patient=patient,
        protocol=world.versions.iv.protocol,
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
        assessment=draft, signer=psychiatrist, password=password, approve=True
    )
    patient.weight_measured_on = date(2025, 3, 1)
    patient.save(update_fields=["weight_measured_on"])

    time_machine.move_to(at(4, 9, 50), tick=False)
    lot = monitoring_services.lot_receive(
        site=site,
        acting_user=nurse,
        drug="ketamine",
        lot_number="KET-C5",
        concentration_mg_per_ml=Decimal("10"),
        expires_on=date(2026, 1, 1),
        received_mg=Decimal("1000"),
    )
    session = monitoring_services.session_schedule(
        course=course,
        acting_user=nurse,
        scheduled_at=timezone.now(),
        chair="2",
        supervising_clinician=anesthesiologist,
    )
    monitoring_services.session_check_in(
        session=session, acting_user=nurse, escort_confirmed=True, escort_details="Partner"
    )
    time_machine.move_to(at(4, 10, 0), tick=False)
    monitoring_services.vitals_record(session=session, acting_user=nurse, **b.NORMAL)
    time_machine.move_to(at(4, 10, 1), tick=False)
    dose_mg = Decimal(patient.weight_kg) * Decimal("0.5")
    monitoring_services.dose_record(
        session=session,
        acting_user=nurse,
        lot=lot,
        dose_mg=dose_mg,
        volume_ml=dose_mg / lot.concentration_mg_per_ml,
        started_at=timezone.now(),
        prescriber=psychiatrist,
    )
    session.refresh_from_db()
    infusion_end = session.dose_started_at + timedelta(
        minutes=session.rules.dose["infusion_minutes"]
    )
    # Every timed check at its due time, charted as it is measured.
    for due in sorted(
        set(session.checks.filter(due_at__isnull=False).values_list("due_at", flat=True))
    ):
        time_machine.move_to(due, tick=False)
        if due == infusion_end:
            monitoring_services.dose_complete(session=session, acting_user=nurse, ended_at=due)
        codes = set(session.checks.filter(due_at=due).values_list("code", flat=True))
        if any(code.startswith("cadss") for code in codes):
            monitoring_services.observation_record(
                session=session, acting_user=nurse, kind="cadss", cadss_total=4
            )
        if any(not code.startswith("cadss") for code in codes):
            monitoring_services.vitals_record(session=session, acting_user=nurse, **b.NORMAL)
    # The before-discharge checks: CADSS and vitals now, then the discharge.
    monitoring_services.observation_record(
        session=session, acting_user=nurse, kind="cadss", cadss_total=2
    )
    session.refresh_from_db()
    monitoring_services.session_discharge(
        session=session,
        signer=anesthesiologist,
        password=password,
        **{
            "aldrete_activity": 2,
            "aldrete_respiration": 2,
            "aldrete_circulation": 2,
            "aldrete_consciousness": 2,
            "aldrete_spo2": 2,
            "moaas": 5,
            "escort_present": True,
            "no_driving_instruction_given": True,
            "prescriber_decision": "",
            "ready_to_leave_minutes": None,
            "notes": "",
        },
    )
    session.refresh_from_db()
    call = FollowUp.objects.get(session=session, code="next_day_call")
    time_machine.move_to(call.due_at + timedelta(hours=3), tick=False)
    followup_services.followup_complete(
        followup=call, acting_user=nurse, contact_method="phone", outcome="Slept well."
    )
    # A waste of more than the lot holds: the register opens an incident (SPEC §M12).
    time_machine.move_to(at(5, 14), tick=False)
    small = monitoring_services.lot_receive(
        site=site,
        acting_user=nurse,
        drug="ketamine",
        lot_number="KET-SHORT",
        concentration_mg_per_ml=Decimal("10"),
        expires_on=date(2026, 1, 1),
        received_mg=Decimal("10"),
    )
    monitoring_services.waste_record(
        lot=small,
        acting_user=nurse,
        amount_mg=Decimal("20"),
        reason="Vial dropped",
        witness=psychiatrist,
        witness_password=password,
    )
    world.p1 = SimpleNamespace(
        patient=patient,
        course=course,
        s1=session,
        # The checks still required (a recovery check not due by the discharge is withdrawn).
        checks=list(session.checks.required().values_list("pk", flat=True)),
        call=call,
        day7=FollowUp.objects.get(session=session, code="day7_review"),
        incident=Incident.objects.get(lot=small),
        discharge_signature=Signature.objects.get(
            content_type__model="treatmentsession", object_id=session.pk
        ),
    )


@pytest.fixture
def world(
    site,
    other_site,
    nurse,
    psychiatrist,
    anesthesiologist,
    administrator,
    password,
    versions,
    templates,
    time_machine,
) -> SimpleNamespace:
    world = SimpleNamespace(
        site=site, other_site=other_site, versions=versions, templates=templates
    )
    _run_p1_through_the_services(
        world,
        time_machine=time_machine,
        nurse=nurse,
        psychiatrist=psychiatrist,
        anesthesiologist=anesthesiologist,
        password=password,
    )
    time_machine.move_to(NOW, tick=False)
    staff = {"psychiatrist": psychiatrist, "nurse": nurse}
    session_staff = {"supervisor": anesthesiologist, "nurse": nurse}

    def patient(mrn, home=site):
        return PatientFactory(home_site=home, created_by=nurse, mrn=mrn)

    def consent(p, template, signed_at, **kwargs):
        return b.consent(p, template, signed_at, witness=nurse, **kwargs)

    k1, e1 = templates.k1, templates.e1
    iv, esk = versions.iv, versions.esk

    # P2: approved only after the first dose; observation too short; checks of every kind.
    p2 = patient("P2")
    consent(p2, k1, at(1, 9, month=2))
    c2 = b.course(p2, iv, **staff)
    b.sign_assessment(c2, at(6, 9), **staff)
    s2 = b.SessionBuilder(c2, at(5), **session_staff)
    s2.reading(10, entered_after=1)
    s2.reading(20, entered_after=25)  # charted 25 min after measuring
    checks = SimpleNamespace(
        on_time=s2.check(10, satisfied_minute=10),
        late=s2.check(20, satisfied_minute=20),
        missed=s2.check(30),
        excused=s2.check(40, excused='=HYPERLINK("http://evil.invalid","help")'),
    )
    alert_2min = s2.alert(10, acknowledged_after=2)
    s2 = s2.discharge(90)  # infusion ended at 40 min: 50 min observed, 60 required

    # P3 (esketamine): approval more than 365 days old, consent expired the day before the dose,
    # no prescriber decision at discharge; REMS form filed in time.
    p3 = patient("P3")
    consent(p3, e1, at(6, 9, year=2024), valid_until=date(2025, 3, 5))
    c3 = b.course(p3, esk, **staff)
    b.sign_assessment(c3, at(10, 9, month=1, year=2024), **staff)
    s3 = b.SessionBuilder(c3, at(6), dose_minutes=10, **session_staff).discharge(
        125, prescriber_decision="  "
    )
    rems_ok = b.rems_form(s3, completed_at=at(8, 9), administrator=administrator)

    # P4: consent withdrawn; an approval, then a declined assessment; Aldrete total 8.
    p4 = patient("P4")
    consent(p4, k1, at(1, 9, month=2), withdrawn_at=at(1, 9))
    c4 = b.course(p4, iv, **staff)
    b.sign_assessment(c4, at(20, 9, month=2), **staff)
    b.sign_assessment(c4, at(25, 9, month=2), approve=False, **staff)
    s4 = b.SessionBuilder(c4, at(7), **session_staff)
    alert_6min = s4.alert(20, acknowledged_after=6)
    s4 = s4.discharge(105, aldrete_activity=0)

    # P5 (esketamine): all in order, except REMS forms: one late, one never planned. A third
    # session aborted after 30 min: a check missed before, one due after the abort.
    p5 = patient("P5")
    consent(p5, e1, at(1, 9, month=2))
    c5 = b.course(p5, esk, **staff)
    b.sign_assessment(c5, at(1, 9, month=2), **staff)
    s5 = b.SessionBuilder(c5, at(11), dose_minutes=10, **session_staff)
    alert_10min = s5.alert(15, acknowledged_after=10)
    s5 = s5.discharge(130)
    rems_late = b.rems_form(s5, completed_at=at(19, 9), administrator=administrator)
    s6 = b.SessionBuilder(c5, at(12), dose_minutes=10, **session_staff)
    alert_1min = s6.alert(5, acknowledged_after=1)
    s6 = s6.discharge(130)
    s13 = b.SessionBuilder(c5, at(14), dose_minutes=10, **session_staff)
    missed_before_abort = s13.check(15)
    s13.check(30)  # window ends 10:35, after the abort at 10:30: not judged
    s13 = s13.abort(30)

    # P6: no assessment at all; consent to v1 superseded by v2 (10 Mar) before the dose; MOAA/S
    # 4 at discharge; a critical alert never acknowledged.
    p6 = patient("P6")
    consent(p6, k1, at(1, 9, month=2))
    c6 = b.course(p6, iv, **staff)
    s7 = b.SessionBuilder(c6, at(13), **session_staff)
    alert_open = s7.alert(30, acknowledged_after=None)
    s7 = s7.discharge(105, moaas=4)

    # P7: first session before the range; in range: no escort at discharge, an open warning.
    p7 = patient("P7")
    consent(p7, k1, at(1, 9, month=2))
    c7 = b.course(p7, iv, **staff)
    b.sign_assessment(c7, at(1, 9, month=2), **staff)
    b.SessionBuilder(c7, at(20, month=2), **session_staff).discharge(105)
    s9 = b.SessionBuilder(c7, at(8), **session_staff)
    s9.alert(10, acknowledged_after=None, level="warning")
    s9 = s9.discharge(105, escort_present=False)

    # P8: never consented; first session before the range; no no-driving instruction.
    p8 = patient("P8")
    c8 = b.course(p8, iv, **staff)
    b.sign_assessment(c8, at(1, 9, month=2), **staff)
    b.SessionBuilder(c8, at(25, month=2), **session_staff).discharge(105)
    s11 = b.SessionBuilder(c8, at(9), **session_staff).discharge(
        105, no_driving_instruction_given=False
    )

    # Not dosed: counts nowhere.
    TreatmentSession.objects.create(
        course=c8,
        patient=p8,
        site=site,
        scheduled_at=at(10),
        chair="3",
        supervising_clinician=anesthesiologist,
        created_by=nurse,
    )

    # Follow-ups written directly.
    def fu(p, due, **kwargs):
        return b.followup(site=site, patient=p, due_at=due, **kwargs)

    completed_late = fu(p2, at(6, 9), completed_at=at(8, 9), completed_by=nurse)
    missed = fu(p4, at(7, 9), state=FollowUp.State.MISSED, reason='+1, "no" answer\nat all')
    completed_early = fu(p7, at(9, 9), completed_at=at(8, 9), completed_by=nurse)
    fu(p7, at(8, 9), state=FollowUp.State.CANCELLED, reason="Superseded")
    pending = fu(p8, at(16, 12), window_hours=168)
    fu(p8, at(1, 9), window_hours=24)  # overdue, but due before the range

    # Incidents, beside the one P1's waste opened.
    b.incident(site, at(20, 9, month=2), by=nurse)

    # Verification runs: only the latest counts.
    old_run = VerificationRun.objects.create(
        started_at=at(15, 2),
        finished_at=at(15, 3),
        ok=False,
        chains=1,
        links=1,
        signatures=1,
        problems=1,
        triggered_by="nightly",
    )
    latest = VerificationRun.objects.create(
        started_at=at(18, 2),
        finished_at=at(18, 3),
        ok=False,
        chains=1,
        links=1,
        signatures=1,
        problems=4,
        triggered_by="nightly",
    )
    signature = world.p1.discharge_signature

    def finding(run, kind=Finding.Kind.SIGNATURE_INVALID, on=site, occurred=None):
        return Finding.objects.create(
            run=run,
            kind=kind,
            source="clinic.signature",
            source_id=signature.pk,
            site=on,
            occurred_at=occurred or at(5),
            detail="Discharged signature no longer matches the record",
        )

    finding(old_run)
    invalid = finding(latest)
    finding(latest, occurred=at(1, 9, month=2))
    finding(latest, on=other_site)
    finding(latest, kind=Finding.Kind.BROKEN_LINK)

    # The other site: counts nowhere for Northside.
    harbour_staff = {
        "psychiatrist": UserFactory(roles=[Role.PSYCHIATRIST], sites=[other_site]),
        "nurse": UserFactory(roles=[Role.NURSE], sites=[other_site]),
    }
    po = patient("PO", home=other_site)
    consent(po, k1, at(1, 9, month=2))
    co = b.course(po, iv, **harbour_staff)
    b.sign_assessment(co, at(1, 9, month=2), **harbour_staff)
    so = b.SessionBuilder(
        co, at(5), supervisor=harbour_staff["psychiatrist"], nurse=harbour_staff["nurse"]
    )
    so.check(10)
    so.alert(10, acknowledged_after=None)
    so.discharge(60)
    b.followup(site=other_site, patient=po, due_at=at(6))
    b.incident(other_site, at(5), by=harbour_staff["nurse"])

    p1 = world.p1
    world.rows = {
        "first-session-approval": {
            "ok": {p1.s1.pk, s5.pk},
            "violations": {s2.pk, s3.pk, s4.pk, s7.pk},
        },
        "consent-at-dosing": {
            "ok": {p1.s1.pk, s2.pk, s5.pk, s6.pk, s9.pk, s13.pk},
            "violations": {s3.pk, s4.pk, s7.pk, s11.pk},
        },
        "checks-on-time": {
            "ok": {*p1.checks, checks.on_time.pk},
            "violations": {
                checks.late.pk,
                checks.missed.pk,
                checks.excused.pk,
                missed_before_abort.pk,
            },
        },
        "discharges": {
            "ok": {p1.s1.pk, s5.pk, s6.pk},
            "violations": {s2.pk, s3.pk, s4.pk, s7.pk, s9.pk, s11.pk},
        },
        "critical-alerts": {
            "ok": {alert_2min.pk, alert_6min.pk, alert_10min.pk, alert_1min.pk},
            "violations": {alert_open.pk},
        },
        "followups-in-window": {
            "ok": {p1.call.pk, rems_ok.pk},
            "violations": {
                p1.day7.pk,
                completed_late.pk,
                missed.pk,
                completed_early.pk,
                rems_late.pk,
            },
        },
        "followups-overdue": {
            "ok": {
                p1.call.pk,
                completed_late.pk,
                missed.pk,
                completed_early.pk,
                pending.pk,
                rems_ok.pk,
                rems_late.pk,
            },
            "violations": {p1.day7.pk},
        },
        "rems-forms": {"ok": {s3.pk}, "violations": {s5.pk, s6.pk}},
        "cs-discrepancies": {"ok": set(), "violations": {p1.incident.pk}},
        "signatures-invalid": {"ok": set(), "violations": {invalid.pk}},
    }
    world.reasons = {
        ("first-session-approval", s2.pk): "Approval signed only after dosing started",
        ("first-session-approval", s3.pk): "Approval older than 365 days",
        ("first-session-approval", s4.pk): "A later assessment was declined before dosing",
        ("first-session-approval", s7.pk): "No approved assessment before dosing",
        ("consent-at-dosing", s3.pk): "Esketamine REMS enrollment: expired",
        ("consent-at-dosing", s4.pk): "Ketamine treatment (off-label): withdrawn",
        (
            "consent-at-dosing",
            s7.pk,
        ): "Ketamine treatment (off-label): superseded, re-consent needed",
        ("consent-at-dosing", s11.pk): "Ketamine treatment (off-label): not signed",
        ("checks-on-time", checks.late.pk): (
            "Recorded late: charted more than 10 min after measuring"
        ),
        ("checks-on-time", checks.missed.pk): "Missed: no reading in its window",
        ("checks-on-time", checks.excused.pk): 'Excused: =HYPERLINK("http://evil.invalid","help")',
        ("checks-on-time", missed_before_abort.pk): "Missed: no reading in its window",
        ("discharges", s2.pk): "Observed less than 60 min",
        ("discharges", s3.pk): "No prescriber decision recorded",
        ("discharges", s4.pk): "Modified Aldrete below 9",
        ("discharges", s7.pk): "MOAA/S not 5",
        ("discharges", s9.pk): "No escort present",
        ("discharges", s11.pk): "No-driving instruction not given",
        ("critical-alerts", alert_open.pk): "Not acknowledged",
        ("followups-in-window", p1.day7.pk): "Open past its window",
        ("followups-in-window", completed_late.pk): "Completed after its window",
        ("followups-in-window", missed.pk): 'Missed: +1, "no" answer\nat all',
        ("followups-in-window", completed_early.pk): "Completed before it was due",
        ("followups-in-window", rems_late.pk): "Completed after its window",
        ("followups-overdue", p1.day7.pk): "Open past its window",
        ("rems-forms", s5.pk): "Filed after its window",
        ("rems-forms", s6.pk): "No REMS form duty planned",
    }
    world.median_ack = timedelta(minutes=4)  # of 1, 2, 6 and 10 minutes
    world.latest_run = latest
    return world
