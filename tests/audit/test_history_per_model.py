"""One history row per change, one audit link per history row (SPEC §C1, §C4).

For every history-tracked model, each operation of its real write path (a service, or the Django
admin for sites and staff, which have no service) is run once, and the test reads exactly what
that operation wrote:

- each record it changed has exactly ONE new history row, naming the acting user
  (`history_user`) and a non-empty reason (`history_change_reason`);
- the operation touched exactly the models the SPEC expects it to touch (a discharge also plans
  follow-ups and meets the before-discharge checks; dosing plans the required checks...);
- each new history row is linked by exactly one `AuditEvent` whose action, time, user, site,
  patient, record type and record id are those of the change, and whose reason is the row's.

"Void" is whatever closes the record for good in its model: void a registration, withdraw a
consent, stop a course, sign an assessment "not approved", abort a session, mark a reading in
error, excuse a check, cancel or miss a follow-up, deactivate a site or an account. A model
without an edit or void path says so next to its tests. Where the app writes two rows for one
change of one record, the test keeps the SPEC's expectation and is a strict xfail ("BUG: ...").
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Max
from django.forms import ModelMultipleChoiceField
from django.urls import reverse
from django.utils import timezone
from simple_history.models import HistoricalChanges

from audit.models import AuditEvent
from audit.scope import SCOPES
from clinic.models import Addendum, Site, User
from clinic.signatures import addendum_add
from followups import services as followup_services
from followups.models import FollowUp
from monitoring import services as monitoring_services
from monitoring.models import (
    Alert,
    ControlledSubstanceEntry,
    Discharge,
    DoseAdministration,
    DrugLot,
    Incident,
    Observation,
    RequiredCheck,
    TreatmentSession,
    VitalReading,
)
from patients import services as patient_services
from patients.models import ConsentKind, ConsentRecord, ConsentTemplate, Patient
from protocols import services as protocol_services
from protocols.models import Assessment, Protocol, ProtocolVersion, TreatmentCourse
from tests.factories import ConsentTemplateFactory
from tests.followups.conftest import (
    approved_course,
    checked_in,
    consented,
    course,
    dosing,
    esketamine_course,
    esketamine_protocol,
    iv_protocol,
    ketamine_lot,
    ready,
    scheduled,
)
from tests.followups.helpers import (
    NORMAL_VITALS,
    discharge_criteria,
    fresh,
    ready_for_discharge,
    start_iv_session,
)
from tests.followups.test_plan import completion_course
from tests.protocols.conftest import complete_draft, complete_fields, draft, submitted

# Step 1 to 3 fixtures, reused: the records under test are built through the real services.
__all__ = [
    "approved_course",
    "checked_in",
    "complete_draft",
    "completion_course",
    "consented",
    "course",
    "dosing",
    "draft",
    "esketamine_course",
    "esketamine_protocol",
    "iv_protocol",
    "ketamine_lot",
    "ready",
    "scheduled",
    "submitted",
]

pytestmark = pytest.mark.django_db

HISTORY_ACTIONS = {"+": "created", "~": "changed", "-": "deleted"}


# --- Reading what one operation wrote ---------------------------------------------------------


def _history_tables() -> list[type[models.Model]]:
    """Every simple-history table: one per tracked model, plus User.sites memberships."""
    return [m for m in apps.get_models() if issubclass(m, HistoricalChanges)]


def _newest(model: type[models.Model]) -> int:
    return model._default_manager.aggregate(newest=Max("pk"))["newest"] or 0


class Recorder:
    """Marks the newest row of every history table and of the audit events, so that a test
    reads exactly the rows one operation wrote (ids only grow)."""

    def __init__(self) -> None:
        self.marks = {table: _newest(table) for table in _history_tables()}
        self.event_mark = _newest(AuditEvent)

    def rows(self, model: type[models.Model]) -> list:
        table = model.history.model
        return list(table.objects.filter(pk__gt=self.marks[table]).order_by("pk"))

    def memberships(self) -> list:
        table = apps.get_model("clinic", "HistoricalUser_sites")
        return list(table.objects.filter(pk__gt=self.marks[table]).order_by("pk"))

    def touched(self) -> set[type[models.Model]]:
        """The tracked models that got at least one history row."""
        return {
            table.instance_type
            for table, mark in self.marks.items()
            if hasattr(table, "tracked_fields") and table.objects.filter(pk__gt=mark).exists()
        }

    def events(self, **filters) -> list[AuditEvent]:
        return list(AuditEvent.objects.filter(pk__gt=self.event_mark, **filters).order_by("pk"))


def expected_scope(record: models.Model) -> tuple[int | None, int | None]:
    """(site id, patient id) a change of `record` belongs to, as the SPEC describes it: a
    patient's records at the patient's home site, a session's rows at the session's site,
    stock at its site, chain-wide documents and staff accounts at no site."""
    if isinstance(record, Site):
        return record.pk, None
    if isinstance(record, (User, ConsentTemplate, Protocol, ProtocolVersion)):
        return None, None
    if isinstance(record, Patient):
        return record.home_site_id, record.pk
    if isinstance(record, (ConsentRecord, TreatmentCourse, Assessment)):
        return record.patient.home_site_id, record.patient_id
    if isinstance(record, TreatmentSession):
        return record.site_id, record.patient_id
    if isinstance(
        record, (DoseAdministration, VitalReading, Alert, RequiredCheck, Observation, Discharge)
    ):
        return record.session.site_id, record.session.patient_id
    if isinstance(record, (DrugLot, Incident)):
        return record.site_id, None
    if isinstance(record, FollowUp):
        return record.site_id, record.patient_id
    if isinstance(record, Addendum):
        return expected_scope(record.content_type.get_object_for_this_type(pk=record.object_id))
    raise AssertionError(f"no expected scope for {record._meta.label}")


def assert_linked(row, record: models.Model, user: User) -> AuditEvent:
    """`row` (a history row of `record`) has exactly one audit link, and the link says who,
    when, which record and why."""
    links = AuditEvent.objects.filter(source=row._meta.label_lower, source_id=row.pk)
    assert links.count() == 1, f"{row._meta.label} #{row.pk}: {links.count()} audit links"
    event = links.get()
    site_id, patient_id = expected_scope(record)
    assert event.action == HISTORY_ACTIONS[row.history_type]
    assert event.occurred_at == row.history_date
    assert event.user_id == user.pk
    assert (event.object_type, event.object_id) == (record._meta.label_lower, str(record.pk))
    assert (event.site_id, event.patient_id) == (site_id, patient_id), record._meta.label
    assert event.reason == row.history_change_reason
    return event


def expect_history(
    recorder: Recorder,
    changed: dict[type[models.Model], list[models.Model]],
    *,
    by: User,
    exactly: bool = True,
) -> None:
    """Each record in `changed` got one history row by `by`, with a reason and one audit link.

    `exactly`: no other tracked model got a row, and every history row the operation wrote
    (memberships included) has its audit link.
    """
    if exactly:
        assert recorder.touched() == set(changed), "the operation changed other models"
    total = 0
    for model, records in changed.items():
        label = model._meta.label
        rows = recorder.rows(model)
        total += len(rows)
        assert sorted(r.id for r in rows) == sorted(r.pk for r in records), (
            f"{label}: expected one history row for each of {sorted(r.pk for r in records)}, "
            f"got rows for {sorted(r.id for r in rows)}"
        )
        by_pk = {record.pk: record for record in records}
        for row in rows:
            assert row.history_user_id == by.pk, f"{label} #{row.id}: not attributed to {by}"
            assert (row.history_change_reason or "").strip(), f"{label} #{row.id}: no reason"
            assert_linked(row, model._base_manager.get(pk=by_pk[row.id].pk), by)
    if exactly:
        total += len(recorder.memberships())
        history_sources = [t._meta.label_lower for t in _history_tables()]
        assert len(recorder.events(source__in=history_sources)) == total


def _only(recorder: Recorder, model: type[models.Model]):
    (row,) = recorder.rows(model)
    return row


# --- Sites (the Django admin is their write path) -----------------------------------------------


def _site_form(site: Site | None = None, **changes) -> dict:
    data = {
        "name": site.name if site else "",
        "time_zone": site.time_zone if site else "Europe/London",
        "address": site.address if site else "",
        "is_active": "on" if site is None or site.is_active else None,
        "quiet_hours_start": "",
        "quiet_hours_end": "",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_adding_a_site_in_the_admin_writes_one_history_row_for_it(client, administrator):
    client.force_login(administrator)
    recorder = Recorder()

    response = client.post(
        reverse("admin:clinic_site_add"), _site_form(name="Eastside", time_zone="Europe/Paris")
    )

    assert response.status_code == 302
    eastside = Site.objects.get(name="Eastside")
    expect_history(recorder, {Site: [eastside]}, by=administrator, exactly=False)
    assert _only(recorder, Site).history_type == "+"
    # The creator joins the new site (so that they can see it): that is a change of their account.
    assert recorder.touched() == {Site, User}


def test_adding_a_site_records_why_the_creator_joined_it(client, administrator):
    client.force_login(administrator)
    recorder = Recorder()

    client.post(reverse("admin:clinic_site_add"), _site_form(name="Eastside"))

    expect_history(
        recorder,
        {Site: [Site.objects.get(name="Eastside")], User: [administrator]},
        by=administrator,
    )


def test_editing_a_site_in_the_admin_writes_one_history_row(client, administrator, site):
    client.force_login(administrator)
    recorder = Recorder()

    response = client.post(
        reverse("admin:clinic_site_change", args=[site.pk]),
        _site_form(site, address="2 Harbour Road"),
    )

    assert response.status_code == 302
    expect_history(recorder, {Site: [site]}, by=administrator)
    assert _only(recorder, Site).address == "2 Harbour Road"


def test_deactivating_a_site_in_the_admin_writes_one_history_row(client, administrator, site):
    """A site is never deleted; deactivating it is its "void"."""
    client.force_login(administrator)
    recorder = Recorder()

    response = client.post(
        reverse("admin:clinic_site_change", args=[site.pk]), _site_form(site, is_active=None)
    )

    assert response.status_code == 302
    expect_history(recorder, {Site: [site]}, by=administrator)
    assert _only(recorder, Site).is_active is False


# --- Staff accounts (the Django admin is their write path) --------------------------------------


def _staff_form(client, member: User, **changes) -> dict:
    """The admin's change form for `member` as the browser posts it back, with `changes`
    (None unticks a box)."""
    page = client.get(reverse("admin:clinic_user_change", args=[member.pk]))
    form = page.context["adminform"].form
    data: dict = {}
    for name, field in form.fields.items():
        value = form.initial.get(name)
        if name == "password" or value is None:
            continue
        if isinstance(field, ModelMultipleChoiceField):
            data[name] = [obj.pk for obj in value]
        elif isinstance(value, bool):
            data[name] = "on" if value else None
        else:
            data[name] = value
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def _assert_memberships_follow(recorder: Recorder, member: User) -> None:
    """Membership snapshots belong to the account's new history rows, each with one link."""
    account_rows = {row.pk for row in recorder.rows(User)}
    for membership in recorder.memberships():
        assert membership.history_id in account_rows
        assert membership.user_id == member.pk
        assert (
            AuditEvent.objects.filter(
                source=membership._meta.label_lower, source_id=membership.pk
            ).count()
            == 1
        )


def test_adding_a_staff_member_in_the_admin_writes_one_history_row(client, administrator):
    client.force_login(administrator)
    recorder = Recorder()

    response = client.post(
        reverse("admin:clinic_user_add"),
        {
            "username": "new.nurse",
            "usable_password": "true",
            "password1": "a-long-Enough-passphrase-42",
            "password2": "a-long-Enough-passphrase-42",
        },
    )

    assert response.status_code == 302
    member = User.objects.get(username="new.nurse")
    expect_history(recorder, {User: [member]}, by=administrator)
    assert _only(recorder, User).history_type == "+"


def test_editing_a_staff_member_in_the_admin_writes_one_history_row(client, administrator, nurse):
    client.force_login(administrator)
    data = _staff_form(client, nurse, last_name="Okafor-Smith")
    recorder = Recorder()

    response = client.post(reverse("admin:clinic_user_change", args=[nurse.pk]), data)

    assert response.status_code == 302
    expect_history(recorder, {User: [nurse]}, by=administrator)
    assert _only(recorder, User).last_name == "Okafor-Smith"
    _assert_memberships_follow(recorder, nurse)


def test_changing_a_staff_members_sites_in_the_admin_writes_one_history_row(
    client, administrator, nurse, site
):
    second = Site.objects.create(name="Riverside")
    administrator.sites.add(second)
    client.force_login(administrator)
    data = _staff_form(client, nurse, sites=[site.pk, second.pk])
    recorder = Recorder()

    response = client.post(reverse("admin:clinic_user_change", args=[nurse.pk]), data)

    assert response.status_code == 302
    assert set(nurse.sites.values_list("pk", flat=True)) == {site.pk, second.pk}
    expect_history(recorder, {User: [nurse]}, by=administrator)


def test_deactivating_a_staff_member_in_the_admin_writes_one_history_row(
    client, administrator, nurse
):
    """Accounts are never deleted; deactivating one is its "void"."""
    client.force_login(administrator)
    data = _staff_form(client, nurse, is_active=None)
    recorder = Recorder()

    response = client.post(reverse("admin:clinic_user_change", args=[nurse.pk]), data)

    assert response.status_code == 302
    expect_history(recorder, {User: [nurse]}, by=administrator)
    assert _only(recorder, User).is_active is False
    _assert_memberships_follow(recorder, nurse)


# --- Patients (patients.services) ---------------------------------------------------------------


def test_registering_a_patient_writes_one_history_row(site, nurse):
    recorder = Recorder()

    patient = patient_services.patient_register(
        site=site,
        acting_user=nurse,
        mrn="h-1001",
        given_name="Ada",
        family_name="Lovelace",
        date_of_birth=timezone.localdate() - timedelta(days=40 * 365),
        sex=Patient.Sex.FEMALE,
    )

    expect_history(recorder, {Patient: [patient]}, by=nurse)
    assert _only(recorder, Patient).history_type == "+"


def test_editing_a_patient_writes_one_history_row(patient, psychiatrist):
    recorder = Recorder()

    patient_services.patient_update(
        patient=patient, acting_user=psychiatrist, phone="0113 496 0000", gp_name="Dr Imrie"
    )

    expect_history(recorder, {Patient: [patient]}, by=psychiatrist)
    assert _only(recorder, Patient).history_change_reason == "Edited: phone, gp_name"


def test_voiding_a_patient_writes_one_history_row(patient, nurse):
    recorder = Recorder()

    patient_services.patient_void(patient=patient, acting_user=nurse, reason="Duplicate")

    expect_history(recorder, {Patient: [patient]}, by=nurse)
    assert _only(recorder, Patient).void_reason == "Duplicate"


# --- Consent templates: chain-wide documents, never withdrawn (publishing is final) ------------


def test_drafting_a_consent_template_writes_one_history_row(administrator):
    recorder = Recorder()

    template = patient_services.consent_template_create(
        acting_user=administrator,
        kind=ConsentKind.DATA_SHARING,
        title="Data sharing",
        text="We share your data with your GP.",
    )

    expect_history(recorder, {ConsentTemplate: [template]}, by=administrator)


def test_editing_a_consent_template_draft_writes_one_history_row(administrator):
    template = ConsentTemplateFactory(
        created_by=administrator, published_at=None, published_by=None
    )
    recorder = Recorder()

    patient_services.consent_template_update(
        template=template, acting_user=administrator, title="Revised title", validity_days=180
    )

    expect_history(recorder, {ConsentTemplate: [template]}, by=administrator)


def test_publishing_a_consent_template_writes_one_history_row(administrator):
    template = ConsentTemplateFactory(
        created_by=administrator, published_at=None, published_by=None
    )
    recorder = Recorder()

    patient_services.consent_template_publish(template=template, acting_user=administrator)

    expect_history(recorder, {ConsentTemplate: [template]}, by=administrator)
    assert _only(recorder, ConsentTemplate).published_at is not None


# --- Consent records: no edit (a new consent is recorded instead) --------------------------------


def test_recording_a_consent_writes_one_history_row(patient, nurse):
    template = ConsentTemplateFactory(kind=ConsentKind.KETAMINE_TREATMENT, created_by=nurse)
    recorder = Recorder()

    consent = patient_services.consent_record(
        patient=patient, template=template, acting_user=nurse, signature_method="tablet"
    )

    expect_history(recorder, {ConsentRecord: [consent]}, by=nurse)


def test_withdrawing_a_consent_writes_one_history_row(consented, psychiatrist):
    recorder = Recorder()

    patient_services.consent_withdraw(
        consent=consented, acting_user=psychiatrist, reason="Patient changed their mind"
    )

    expect_history(recorder, {ConsentRecord: [consented]}, by=psychiatrist)


# --- Protocols: shipped by a data migration; no service creates, edits or retires one ------------


def test_no_service_writes_a_protocol_row_drafting_a_version_leaves_it_unchanged(
    iv_protocol, administrator
):
    recorder = Recorder()

    version = protocol_services.protocol_version_create(
        protocol=iv_protocol,
        acting_user=administrator,
        rules=protocol_services.current_version(iv_protocol).rules,
        change_summary="Longer observation",
    )

    # The version is numbered under a lock on its protocol, which is read, never saved.
    expect_history(recorder, {ProtocolVersion: [version]}, by=administrator)
    assert Protocol not in recorder.touched()


# --- Protocol versions: published ones are final (no void) -----------------------------------


@pytest.fixture
def version_draft(iv_protocol, administrator) -> ProtocolVersion:
    return protocol_services.protocol_version_create(
        protocol=iv_protocol,
        acting_user=administrator,
        rules=protocol_services.current_version(iv_protocol).rules,
        change_summary="Draft",
    )


def test_drafting_a_protocol_version_writes_one_history_row(iv_protocol, administrator):
    recorder = Recorder()

    version = protocol_services.protocol_version_create(
        protocol=iv_protocol,
        acting_user=administrator,
        rules=protocol_services.current_version(iv_protocol).rules,
        change_summary="Draft",
    )

    expect_history(recorder, {ProtocolVersion: [version]}, by=administrator)


def test_editing_a_protocol_version_draft_writes_one_history_row(version_draft, administrator):
    recorder = Recorder()

    protocol_services.protocol_version_update(
        version=version_draft,
        acting_user=administrator,
        rules=version_draft.rules,
        change_summary="Draft, reviewed",
    )

    expect_history(recorder, {ProtocolVersion: [version_draft]}, by=administrator)


def test_publishing_a_protocol_version_writes_one_history_row(version_draft, administrator):
    recorder = Recorder()

    protocol_services.protocol_version_publish(version=version_draft, acting_user=administrator)

    expect_history(recorder, {ProtocolVersion: [version_draft]}, by=administrator)


# --- Treatment courses -----------------------------------------------------------------------


def test_starting_a_course_writes_one_history_row(patient, iv_protocol, nurse, psychiatrist):
    recorder = Recorder()

    started = protocol_services.course_start(
        patient=patient,
        protocol=iv_protocol,
        acting_user=nurse,
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=psychiatrist,
        planned_sessions=6,
    )

    expect_history(recorder, {TreatmentCourse: [started]}, by=nurse)


def test_pausing_a_course_writes_one_history_row(approved_course, psychiatrist):
    recorder = Recorder()

    protocol_services.course_set_status(
        course=approved_course, acting_user=psychiatrist, status="paused", reason="Holiday"
    )

    expect_history(recorder, {TreatmentCourse: [approved_course]}, by=psychiatrist)


def test_stopping_a_course_writes_one_history_row(course, psychiatrist):
    recorder = Recorder()

    protocol_services.course_set_status(
        course=course, acting_user=psychiatrist, status="stopped", reason="Moved away"
    )

    expect_history(recorder, {TreatmentCourse: [course]}, by=psychiatrist)


def test_completing_a_course_writes_one_row_for_it_and_one_per_planned_follow_up(
    completion_course, psychiatrist
):
    before = set(FollowUp.objects.values_list("pk", flat=True))
    recorder = Recorder()

    # Completing a course plans its completion follow-ups: the Step 3 service does both.
    followup_services.course_set_status_with_plan(
        course=completion_course, acting_user=psychiatrist, status="completed", reason=""
    )

    planned = list(FollowUp.objects.exclude(pk__in=before))
    assert planned, "this version plans an end-of-induction review on completion"
    expect_history(
        recorder, {TreatmentCourse: [completion_course], FollowUp: planned}, by=psychiatrist
    )


# --- Assessments: "void" is signing it not approved (it locks) ---------------------------------


def test_starting_an_assessment_writes_one_history_row(course, nurse):
    recorder = Recorder()

    assessment = protocol_services.assessment_create(course=course, acting_user=nurse)

    expect_history(recorder, {Assessment: [assessment]}, by=nurse)


def test_editing_an_assessment_draft_writes_one_history_row(draft, course, psychiatrist):
    recorder = Recorder()

    protocol_services.assessment_update(
        assessment=draft, acting_user=psychiatrist, **complete_fields(course)
    )

    expect_history(recorder, {Assessment: [draft]}, by=psychiatrist)


def test_submitting_an_assessment_writes_one_history_row(complete_draft, nurse):
    recorder = Recorder()

    protocol_services.assessment_submit(assessment=complete_draft, acting_user=nurse)

    expect_history(recorder, {Assessment: [complete_draft]}, by=nurse)


def test_signing_an_assessment_not_approved_writes_one_history_row_and_a_signature(
    submitted, psychiatrist, password
):
    recorder = Recorder()

    protocol_services.assessment_sign(
        assessment=submitted, signer=psychiatrist, password=password, approve=False
    )

    expect_history(recorder, {Assessment: [submitted]}, by=psychiatrist)
    (signed,) = recorder.events(source="clinic.signature")
    assert (signed.action, signed.user_id) == ("signed", psychiatrist.pk)
    assert (signed.object_type, signed.object_id) == ("protocols.assessment", str(submitted.pk))
    assert (signed.site_id, signed.patient_id) == expected_scope(submitted)


def test_signing_an_assessment_approved_writes_one_row_for_it_and_one_for_its_course(
    submitted, course, psychiatrist, password
):
    recorder = Recorder()

    protocol_services.assessment_sign(
        assessment=submitted, signer=psychiatrist, password=password, approve=True
    )

    # Approval activates the course (SPEC §G): a change of the course, by the signer.
    expect_history(recorder, {Assessment: [submitted], TreatmentCourse: [course]}, by=psychiatrist)
    assert len(recorder.events(source="clinic.signature")) == 1


def test_a_refused_signing_writes_no_history_and_one_refusal_link(submitted, psychiatrist):
    recorder = Recorder()

    with pytest.raises(ValidationError):
        protocol_services.assessment_sign(
            assessment=submitted, signer=psychiatrist, password="wrong", approve=True
        )

    assert recorder.touched() == set()
    (refused,) = recorder.events()
    assert refused.source == "clinic.signaturefailure"
    assert (refused.action, refused.user_id) == ("signing-refused", psychiatrist.pk)
    assert (refused.object_type, refused.object_id) == ("protocols.assessment", str(submitted.pk))
    assert (refused.site_id, refused.patient_id) == expected_scope(submitted)


# --- Addenda: signed and locked when written (no edit, no void) --------------------------------


@pytest.fixture
def signed(submitted, psychiatrist, password) -> Assessment:
    return protocol_services.assessment_sign(
        assessment=submitted, signer=psychiatrist, password=password, approve=True
    )


def _add_addendum(record, author, password) -> Addendum:
    addendum_add(
        record=record,
        author=author,
        password=password,
        text="Allergy to latex, omitted at the assessment.",
        reason="Information received after signing",
    )
    return Addendum.objects.get(
        content_type=ContentType.objects.get_for_model(record), object_id=record.pk
    )


def test_adding_an_addendum_writes_one_history_row(signed, psychiatrist, password):
    recorder = Recorder()

    addendum = _add_addendum(signed, psychiatrist, password)

    expect_history(recorder, {Addendum: [addendum]}, by=psychiatrist)


def test_adding_an_addendum_leaves_the_signed_record_unchanged_and_links_its_signature(
    signed, psychiatrist, password
):
    recorder = Recorder()

    addendum = _add_addendum(signed, psychiatrist, password)

    assert recorder.touched() == {Addendum}
    for row in recorder.rows(Addendum):
        assert row.history_user_id == psychiatrist.pk
        assert row.history_change_reason
        assert_linked(row, addendum, psychiatrist)
    (signature,) = recorder.events(source="clinic.signature")
    assert (signature.object_type, signature.object_id) == ("clinic.addendum", str(addendum.pk))
    assert (signature.site_id, signature.patient_id) == expected_scope(signed)


# --- Treatment sessions: "void" is aborting ------------------------------------------------------


def test_scheduling_a_session_writes_one_history_row(approved_course, nurse, anesthesiologist):
    recorder = Recorder()

    session = monitoring_services.session_schedule(
        course=approved_course,
        acting_user=nurse,
        scheduled_at=timezone.now(),
        chair="2",
        supervising_clinician=anesthesiologist,
    )

    expect_history(recorder, {TreatmentSession: [session]}, by=nurse)


def test_checking_a_patient_in_writes_one_history_row(scheduled, nurse):
    recorder = Recorder()

    monitoring_services.session_check_in(
        session=scheduled, acting_user=nurse, escort_confirmed=True, escort_details="Son, taxi"
    )

    expect_history(recorder, {TreatmentSession: [scheduled]}, by=nurse)


def test_the_predose_decision_writes_one_history_row(checked_in, nurse, psychiatrist):
    # SPEC §M5: the decision is taken on a raised pre-dose reading.
    monitoring_services.vitals_record(
        session=checked_in, acting_user=nurse, sbp=150, dbp=92, hr=80, rr=14, spo2=98
    )
    recorder = Recorder()

    monitoring_services.predose_decide(
        session=checked_in, acting_user=psychiatrist, decision="proceed", reason="Anxious, 150/92"
    )

    expect_history(recorder, {TreatmentSession: [checked_in]}, by=psychiatrist)


def test_aborting_a_session_writes_one_history_row(checked_in, nurse):
    recorder = Recorder()

    monitoring_services.session_abort(session=checked_in, acting_user=nurse, reason="Vomiting")

    expect_history(recorder, {TreatmentSession: [checked_in]}, by=nurse)


# --- Doses: recorded, then completed; never voided (an aborted session keeps its dose) ----------


def _record_dose(session, nurse, psychiatrist, lot, patient) -> DoseAdministration:
    dose_mg = Decimal(patient.weight_kg) * Decimal("0.5")
    return monitoring_services.dose_record(
        session=session,
        acting_user=nurse,
        lot=lot,
        dose_mg=dose_mg,
        volume_ml=dose_mg / lot.concentration_mg_per_ml,
        started_at=timezone.now(),
        prescriber=psychiatrist,
    )


def test_recording_the_dose_writes_one_row_for_the_dose_and_one_for_the_session(
    ready, nurse, psychiatrist, ketamine_lot, patient
):
    recorder = Recorder()

    dose = _record_dose(ready, nurse, psychiatrist, ketamine_lot, patient)

    # Dosing also plans the session's required checks (tested on their own below).
    assert recorder.touched() == {DoseAdministration, TreatmentSession, RequiredCheck}
    expect_history(
        recorder, {DoseAdministration: [dose], TreatmentSession: [ready]}, by=nurse, exactly=False
    )
    (entry,) = recorder.events(source="monitoring.controlledsubstanceentry")
    register_line = ControlledSubstanceEntry.objects.get(pk=entry.source_id)
    assert register_line.kind == ControlledSubstanceEntry.Kind.ADMINISTRATION
    assert (entry.action, entry.user_id) == ("recorded", nurse.pk)
    assert (entry.site_id, entry.patient_id) == (ready.site_id, patient.pk)


def test_recording_the_dose_writes_one_history_row_per_planned_check(
    ready, nurse, psychiatrist, ketamine_lot, patient
):
    recorder = Recorder()

    _record_dose(ready, nurse, psychiatrist, ketamine_lot, patient)

    planned = list(ready.checks.all())
    assert planned
    expect_history(recorder, {RequiredCheck: planned}, by=nurse, exactly=False)


def test_completing_the_dose_writes_one_row_for_the_dose_and_one_for_the_session(
    dosing, nurse, time_machine
):
    time_machine.move_to(timezone.now() + timedelta(minutes=40), tick=False)
    dose = dosing.doses.get()
    before = {c.pk: c.voided_at for c in dosing.checks.all()}
    recorder = Recorder()

    monitoring_services.dose_complete(session=dosing, acting_user=nurse, ended_at=timezone.now())

    # SPEC §M6: the schedule is re-planned from the actual end: each check it adds or withdraws
    # is one more row.
    replanned = [
        c
        for c in dosing.checks.all()
        if c.pk not in before or (c.voided_at is not None and before[c.pk] is None)
    ]
    changed = {DoseAdministration: [dose], TreatmentSession: [dosing]}
    if replanned:
        changed[RequiredCheck] = replanned
    expect_history(recorder, changed, by=nurse)


# --- Vital readings: never edited (SPEC §M8); "void" is marking one entered in error -----------


def _satisfied(session) -> set[int]:
    return set(session.checks.filter(satisfied_at__isnull=False).values_list("pk", flat=True))


def test_recording_vitals_writes_one_history_row(checked_in, nurse):
    recorder = Recorder()

    reading = monitoring_services.vitals_record(
        session=checked_in, acting_user=nurse, **NORMAL_VITALS
    )

    expect_history(recorder, {VitalReading: [reading]}, by=nurse)


def test_marking_a_reading_in_error_writes_one_history_row(ready, anesthesiologist):
    reading = ready.vitals.get()
    recorder = Recorder()

    monitoring_services.vitals_mark_error(
        reading=reading, acting_user=anesthesiologist, reason="Cuff on the wrong arm"
    )

    expect_history(recorder, {VitalReading: [reading]}, by=anesthesiologist)


# --- Alerts: raised by a reading, acknowledged; never voided ------------------------------------


def test_a_critical_reading_writes_one_row_for_it_and_one_per_alert(dosing, nurse):
    satisfied = _satisfied(dosing)
    recorder = Recorder()

    reading = monitoring_services.vitals_record(
        session=dosing, acting_user=nurse, **{**NORMAL_VITALS, "spo2": 85}
    )

    alerts = list(reading.alerts.all())
    assert [a.level for a in alerts] == [Alert.Level.CRITICAL]
    changed = {VitalReading: [reading], Alert: alerts}
    met = list(dosing.checks.filter(pk__in=_satisfied(dosing) - satisfied))
    if met:  # a reading inside a check's window also meets the check
        changed[RequiredCheck] = met
    # The alert is raised on behalf of the nurse who entered the reading.
    expect_history(recorder, changed, by=nurse)


def test_acknowledging_an_alert_writes_one_history_row(dosing, nurse, anesthesiologist):
    monitoring_services.vitals_record(
        session=dosing, acting_user=nurse, **{**NORMAL_VITALS, "spo2": 85}
    )
    alert = dosing.alerts.get()
    recorder = Recorder()

    monitoring_services.alert_acknowledge(
        alert=alert, acting_user=anesthesiologist, action_taken="Oxygen 2 L/min, resolved"
    )

    expect_history(recorder, {Alert: [alert]}, by=anesthesiologist)


# --- Required checks: planned at dosing (above), met by a reading, or excused ("void") ----------


def test_a_reading_in_a_checks_window_writes_one_row_per_check_it_meets(
    dosing, nurse, time_machine
):
    first_due = dosing.checks.filter(code__startswith="infusion").order_by("due_at").first()
    time_machine.move_to(first_due.due_at, tick=False)
    satisfied = _satisfied(dosing)
    recorder = Recorder()

    reading = monitoring_services.vitals_record(session=dosing, acting_user=nurse, **NORMAL_VITALS)

    met = list(dosing.checks.filter(pk__in=_satisfied(dosing) - satisfied))
    assert first_due in met
    expect_history(recorder, {VitalReading: [reading], RequiredCheck: met}, by=nurse)


def test_excusing_a_check_writes_one_history_row(dosing, anesthesiologist):
    check = (
        dosing.checks.required().filter(satisfied_at__isnull=True).order_by("due_at", "pk").first()
    )
    recorder = Recorder()

    monitoring_services.check_excuse(
        check=check, acting_user=anesthesiologist, reason="Patient asleep, monitor showed normal"
    )

    expect_history(recorder, {RequiredCheck: [check]}, by=anesthesiologist)


# --- Observations: recorded only (a correction is a new observation) -----------------------------


def test_recording_an_observation_writes_one_history_row(dosing, nurse):
    recorder = Recorder()

    observation = monitoring_services.observation_record(
        session=dosing, acting_user=nurse, kind="note", text="Calm, talking to escort."
    )

    expect_history(recorder, {Observation: [observation]}, by=nurse)


# --- Discharge: recorded once with its signature, then locked (no edit, no void) ----------------


def test_discharging_writes_one_row_per_record_it_changes_all_by_the_signer(
    approved_course, nurse, anesthesiologist, psychiatrist, ketamine_lot, password, time_machine
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
    satisfied = _satisfied(session)
    open_before = set(session.checks.required().values_list("pk", flat=True))
    recorder = Recorder()

    monitoring_services.session_discharge(
        session=session, signer=anesthesiologist, password=password, **discharge_criteria(session)
    )

    session = fresh(session)
    met = list(session.checks.filter(pk__in=_satisfied(session) - satisfied))
    # Recovery checks not yet due when the patient leaves are withdrawn (SPEC §M6).
    withdrawn = list(session.checks.filter(pk__in=open_before, voided_at__isnull=False))
    planned = list(FollowUp.objects.filter(session=session))
    assert planned
    changed = {
        TreatmentSession: [session],
        Discharge: [session.discharge],
        FollowUp: planned,
    }
    if met or withdrawn:  # before-discharge checks are met at discharge
        changed[RequiredCheck] = met + withdrawn
    expect_history(recorder, changed, by=anesthesiologist)
    (signature,) = recorder.events(source="clinic.signature")
    assert (signature.object_type, signature.object_id) == (
        "monitoring.treatmentsession",
        str(session.pk),
    )
    assert (signature.user_id, signature.site_id) == (anesthesiologist.pk, session.site_id)


# --- Stock: a lot is received (no edit, no void: the register corrects it) -----------------------


def test_receiving_a_lot_writes_one_history_row_and_one_register_link(site, nurse):
    recorder = Recorder()

    lot = monitoring_services.lot_receive(
        site=site,
        acting_user=nurse,
        drug="ketamine",
        lot_number="KET-H-7",
        concentration_mg_per_ml=Decimal("50"),
        expires_on=timezone.localdate() + timedelta(days=200),
        received_mg=Decimal("500"),
    )

    expect_history(recorder, {DrugLot: [lot]}, by=nurse)
    (entry,) = recorder.events(source="monitoring.controlledsubstanceentry")
    assert (entry.action, entry.user_id, entry.site_id) == ("recorded", nurse.pk, site.pk)


# --- Incidents: opened by a discrepancy (no edit or close service yet) --------------------------


def test_a_waste_beyond_the_balance_opens_an_incident_with_one_history_row(
    ketamine_lot, nurse, psychiatrist, password
):
    recorder = Recorder()

    monitoring_services.waste_record(
        lot=ketamine_lot,
        acting_user=nurse,
        amount_mg=Decimal("1500"),
        reason="Vial dropped",
        witness=psychiatrist,
        witness_password=password,
    )

    incident = Incident.objects.get(lot=ketamine_lot)
    expect_history(recorder, {Incident: [incident]}, by=nurse)
    (entry,) = recorder.events(source="monitoring.controlledsubstanceentry")
    assert (entry.action, entry.user_id) == ("recorded", nurse.pk)


# --- Follow-ups: planned, completed, cancelled or missed ---------------------------------------


@pytest.fixture
def plan(approved_course, nurse) -> dict[str, FollowUp]:
    followups = followup_services.plan_from(
        course=approved_course, start=timezone.now(), acting_user=nurse
    )
    return {followup.code: followup for followup in followups}


def test_planning_follow_ups_writes_one_history_row_per_follow_up(approved_course, nurse):
    recorder = Recorder()

    planned = followup_services.plan_from(
        course=approved_course, start=timezone.now(), acting_user=nurse
    )

    assert len(planned) > 1
    expect_history(recorder, {FollowUp: planned}, by=nurse)


def test_completing_a_follow_up_writes_one_history_row(plan, nurse):
    call = plan["next_day_call"]
    recorder = Recorder()

    followup_services.followup_complete(
        followup=call, acting_user=nurse, contact_method="phone", outcome="Slept well."
    )

    expect_history(recorder, {FollowUp: [call]}, by=nurse)


def test_completing_a_signed_review_writes_one_history_row(plan, psychiatrist, password):
    review = plan["day7_review"]
    recorder = Recorder()

    followup_services.followup_complete(
        followup=review,
        acting_user=psychiatrist,
        password=password,
        contact_method="video",
        phq9_items=[0] * 9,
        gad7_items=[0] * 7,
        outcome="In remission.",
    )

    expect_history(recorder, {FollowUp: [review]}, by=psychiatrist)


def test_cancelling_a_follow_up_writes_one_history_row(plan, psychiatrist):
    call = plan["next_day_call"]
    recorder = Recorder()

    followup_services.followup_cancel(
        followup=call, acting_user=psychiatrist, reason="Seen in clinic instead"
    )

    expect_history(recorder, {FollowUp: [call]}, by=psychiatrist)


def test_marking_a_follow_up_missed_writes_one_history_row(plan, nurse):
    call = plan["next_day_call"]
    recorder = Recorder()

    followup_services.followup_mark_missed(
        followup=call, acting_user=nurse, reason="No answer after three calls"
    )

    expect_history(recorder, {FollowUp: [call]}, by=nurse)


# --- Every tracked model is covered ---------------------------------------------------------------

COVERAGE: dict[str, tuple] = {
    "clinic.site": (
        test_adding_a_site_in_the_admin_writes_one_history_row_for_it,
        test_editing_a_site_in_the_admin_writes_one_history_row,
        test_deactivating_a_site_in_the_admin_writes_one_history_row,
    ),
    "clinic.user": (
        test_adding_a_staff_member_in_the_admin_writes_one_history_row,
        test_editing_a_staff_member_in_the_admin_writes_one_history_row,
        test_deactivating_a_staff_member_in_the_admin_writes_one_history_row,
    ),
    "clinic.addendum": (test_adding_an_addendum_writes_one_history_row,),
    "patients.patient": (
        test_registering_a_patient_writes_one_history_row,
        test_editing_a_patient_writes_one_history_row,
        test_voiding_a_patient_writes_one_history_row,
    ),
    "patients.consenttemplate": (
        test_drafting_a_consent_template_writes_one_history_row,
        test_editing_a_consent_template_draft_writes_one_history_row,
        test_publishing_a_consent_template_writes_one_history_row,
    ),
    "patients.consentrecord": (
        test_recording_a_consent_writes_one_history_row,
        test_withdrawing_a_consent_writes_one_history_row,
    ),
    "protocols.protocol": (
        test_no_service_writes_a_protocol_row_drafting_a_version_leaves_it_unchanged,
    ),
    "protocols.protocolversion": (
        test_drafting_a_protocol_version_writes_one_history_row,
        test_editing_a_protocol_version_draft_writes_one_history_row,
        test_publishing_a_protocol_version_writes_one_history_row,
    ),
    "protocols.treatmentcourse": (
        test_starting_a_course_writes_one_history_row,
        test_pausing_a_course_writes_one_history_row,
        test_stopping_a_course_writes_one_history_row,
    ),
    "protocols.assessment": (
        test_starting_an_assessment_writes_one_history_row,
        test_editing_an_assessment_draft_writes_one_history_row,
        test_signing_an_assessment_not_approved_writes_one_history_row_and_a_signature,
    ),
    "monitoring.treatmentsession": (
        test_scheduling_a_session_writes_one_history_row,
        test_checking_a_patient_in_writes_one_history_row,
        test_aborting_a_session_writes_one_history_row,
    ),
    "monitoring.doseadministration": (
        test_recording_the_dose_writes_one_row_for_the_dose_and_one_for_the_session,
        test_completing_the_dose_writes_one_row_for_the_dose_and_one_for_the_session,
    ),
    "monitoring.vitalreading": (
        test_recording_vitals_writes_one_history_row,
        test_marking_a_reading_in_error_writes_one_history_row,
    ),
    "monitoring.alert": (
        test_a_critical_reading_writes_one_row_for_it_and_one_per_alert,
        test_acknowledging_an_alert_writes_one_history_row,
    ),
    "monitoring.requiredcheck": (
        test_recording_the_dose_writes_one_history_row_per_planned_check,
        test_a_reading_in_a_checks_window_writes_one_row_per_check_it_meets,
        test_excusing_a_check_writes_one_history_row,
    ),
    "monitoring.observation": (test_recording_an_observation_writes_one_history_row,),
    "monitoring.discharge": (
        test_discharging_writes_one_row_per_record_it_changes_all_by_the_signer,
    ),
    "monitoring.druglot": (test_receiving_a_lot_writes_one_history_row_and_one_register_link,),
    "monitoring.incident": (
        test_a_waste_beyond_the_balance_opens_an_incident_with_one_history_row,
    ),
    "followups.followup": (
        test_planning_follow_ups_writes_one_history_row_per_follow_up,
        test_completing_a_follow_up_writes_one_history_row,
        test_cancelling_a_follow_up_writes_one_history_row,
    ),
}


def test_every_history_tracked_model_has_its_operations_tested_here():
    """A new tracked model (in the audit scopes or with a history table) fails here until its
    create / edit / void paths get tests in this module."""
    scoped = {label for label in SCOPES if hasattr(apps.get_model(label), "history")}
    with_history = {
        table.instance_type._meta.label_lower
        for table in _history_tables()
        if hasattr(table, "tracked_fields")
    }
    assert scoped == with_history, "a tracked model has no audit scope, or the reverse"
    missing = sorted(with_history - set(COVERAGE))
    stale = sorted(set(COVERAGE) - with_history)
    assert not missing, f"tracked models without history tests: {missing}"
    assert not stale, f"COVERAGE names models that are no longer tracked: {stale}"
    module = globals()
    for label, tests in COVERAGE.items():
        assert tests, label
        for test in tests:
            assert module.get(test.__name__) is test, f"{label}: {test.__name__} is not a test here"
