"""Who may open which URL (SPEC §U): every URL x every actor x own/other site.

Expectations come from SPEC §U and the role → permission maps of
`clinic/migrations/0002_roles_and_service_account.py`,
`protocols/migrations/0002_default_protocols_roles_guards.py`,
`monitoring/migrations/0002_roles_and_guards.py` and `followups/migrations/0002_roles.py`, not from
what the views happen to return:

- anonymous visitors are sent to the login page, except for `login` and `healthz`;
- a role without the permission gets 403;
- an object outside the user's sites answers 404 (never 403), whatever the role, so that its
  existence does not leak; a POST-only URL answers a GET with 405 before it looks at the object;
- consent templates, protocols and protocol versions are chain-wide documents (they have no site),
  so their rows vary by draft / published instead of own / other site;
- notifications belong to one user: the list shows the user's own, and marking read touches only
  the user's own (tested further below);
- Step 2: nurses, psychiatrists and anesthesiologists do the chairside work; only psychiatrists
  and anesthesiologists acknowledge alerts and sign discharges; only psychiatrists record the
  pre-dose decision; GPs and administrators read but write nothing clinical. The floor board and
  the controlled-substance register are per current site (no object);
- Step 3: a follow-up is completed (or marked missed) by a holder of `followups.complete_followup`
  who also has the role it is assigned to (a psychiatrist may take any but the administrators'
  duties); anyone else gets 403. Open follow-ups need `complete_followup` to be opened at all,
  closed ones only `view_followup`.

State-changing rows post an invalid form (or an invalid request, such as submitting an incomplete
assessment or marking another user's notification read): allowed roles get the form back with
errors (200) or are sent back (302), and nothing is saved, whatever the answer. A few rows post a
valid minimal request where that is simpler (publishing, starting an assessment, completing or
missing a follow-up, where the assigned role is what is tested). A case that the SPEC and the app
disagree on keeps the SPEC's answer and is marked `xfail(strict=True, reason="BUG: ...")`. The
Django admin (namespace `admin`) has its own tests at the end of the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import cached_property
from types import SimpleNamespace

import pytest
from django.contrib.messages import get_messages
from django.core.files.base import ContentFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from audit.models import VerificationRun
from clinic.middleware import SESSION_KEY
from clinic.models import Addendum, Notification, Role, Signature, SignatureFailure, Site, User
from clinic.notifications import notify
from followups import services as followup_services
from followups.models import FollowUp, Reminder
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
from patients.models import ConsentRecord, ConsentTemplate, Patient
from protocols import services
from protocols.models import Assessment, Protocol, ProtocolVersion, TreatmentCourse
from tests.factories import (
    TEST_PASSWORD,
    ConsentRecordFactory,
    ConsentTemplateFactory,
    PatientFactory,
    UserFactory,
)
from tests.protocols.conftest import complete_fields

pytestmark = pytest.mark.django_db

ANONYMOUS = "anonymous"
ROLES = ("nurse", "psychiatrist", "anesthesiologist", "gp", "administrator")
VARIANTS = ("own", "other")

# The smallest file the scan view will stream back: content sniffing happens at upload, not here.
PDF_SCAN = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"

# Normal pre-dose vitals: the start gate opens, no alert.
NORMAL_VITALS = {"sbp": 125, "dbp": 80, "hr": 70, "rr": 14, "spo2": 98, "moaas": 5}


def only(*roles: str, ok: int = 200) -> dict[str, int]:
    """`ok` for the given roles, 403 for every other role."""
    unknown = set(roles) - set(ROLES)
    assert not unknown, unknown
    return {role: ok if role in roles else 403 for role in ROLES}


def every_role(status: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, status)


# Who holds which permission, as granted by the roles migrations.
CAN_VIEW_PATIENTS = ROLES
CAN_REGISTER = ("nurse", "psychiatrist")  # patients.add_patient
CAN_EDIT_PATIENT = ("nurse", "psychiatrist", "anesthesiologist")  # patients.change_patient
CAN_VOID = ("nurse", "psychiatrist")  # patients.void_patient
CAN_VIEW_CONSENTS = ROLES  # patients.view_consentrecord
CAN_RECORD_CONSENT = ("nurse", "psychiatrist")  # patients.add_consentrecord
CAN_WITHDRAW = ("nurse", "psychiatrist")  # patients.withdraw_consentrecord
CAN_READ_TEMPLATES = ("nurse", "psychiatrist", "administrator")  # view_consenttemplate
CAN_WRITE_TEMPLATES = ("administrator",)  # add / change / publish_consenttemplate
# Step 1 (protocols migration 0002). Administrators manage protocol versions but never write
# clinical records (§U); only psychiatrists sign (§A3); nurses and psychiatrists edit drafts.
CAN_READ_PROTOCOLS = ROLES  # protocols.view_protocolversion
CAN_WRITE_PROTOCOLS = ("administrator",)  # add / change / publish_protocolversion
CAN_START_COURSE = ("nurse", "psychiatrist")  # protocols.add_treatmentcourse
CAN_CHANGE_COURSE = ("psychiatrist",)  # protocols.change_treatmentcourse
CAN_VIEW_ASSESSMENTS = ROLES  # protocols.view_assessment
CAN_EDIT_ASSESSMENT = ("nurse", "psychiatrist")  # protocols.add_ / change_assessment
CAN_SIGN_ASSESSMENT = ("psychiatrist",)  # protocols.sign_assessment
CAN_ADD_ADDENDUM = ("nurse", "psychiatrist")  # clinic.add_addendum (not anesthesiologists, SPEC §U)
# Step 2 (monitoring migration 0002). GPs may only look at sessions; administrators read
# everything and keep the stock, but record nothing at the chair.
CAN_VIEW_SESSIONS = ROLES  # monitoring.view_treatmentsession
CAN_SCHEDULE = ("nurse", "psychiatrist")  # monitoring.add_treatmentsession
CHAIRSIDE = ("nurse", "psychiatrist", "anesthesiologist")  # monitoring.dose_treatmentsession
CAN_DECIDE_PREDOSE = ("psychiatrist",)  # monitoring.decide_predose
CAN_ACKNOWLEDGE = ("psychiatrist", "anesthesiologist")  # monitoring.acknowledge_alert
CAN_DISCHARGE = ("psychiatrist", "anesthesiologist")  # monitoring.discharge_treatmentsession
CAN_VIEW_REGISTER = ("nurse", "psychiatrist", "anesthesiologist", "administrator")  # view_druglot
CAN_EXPORT_REGISTER = ("administrator",)  # monitoring.view_controlledsubstanceentry
CAN_RECEIVE_LOT = ("nurse", "administrator")  # monitoring.add_druglot
CAN_WASTE = ("nurse", "psychiatrist", "anesthesiologist")  # add_controlledsubstanceentry
# Step 3 (followups migration 0002); which follow-up a role may close is the assigned role's.
CAN_VIEW_FOLLOWUPS = ROLES  # followups.view_followup
CAN_COMPLETE_FOLLOWUPS = ("nurse", "psychiatrist", "gp", "administrator")  # complete_followup

# Objects a row can address, with the URL keyword that carries their id. Site-scoped ones get an
# own-site and an other-site variant; chain-wide ones are addressed as they are.
SITE_SCOPED = {
    "patient": "patient_id",
    "consent": "consent_id",
    "course": "course_id",
    "assessment": "assessment_id",  # a draft
    "submitted": "assessment_id",  # submitted for sign-off
    "signed": "assessment_id",  # signed approved, locked
    "session": "session_id",  # scheduled
    "checked_in": "session_id",  # checked in: in progress, not dosed
    "dosing": "session_id",  # dosing, with a critical alert and open checks
    "reading": "reading_id",  # of the dosing session
    "alert": "alert_id",  # critical, not acknowledged, of the dosing session
    "check": "check_id",  # planned, not done, of the dosing session
    "lot": "lot_id",  # ketamine in stock
    "followup": "followup_id",  # open: the nurses' next-day call
    "review": "followup_id",  # open: the psychiatrist's signed 7-day review
    "gp_check": "followup_id",  # open: the GP's 28-day physical check
    "rems": "followup_id",  # open: the administrators' REMS form (esketamine)
    "followup_closed": "followup_id",  # missed, with its reason
}
CHAIN_WIDE = {
    "draft": "template_id",
    "published": "template_id",
    "protocol": "protocol_id",
    "version_draft": "version_id",
    "version_published": "version_id",
}


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    # Answer per role for the own-site object (or for a URL without object).
    expected: dict[str, int]
    # None, a key of SITE_SCOPED or a key of CHAIN_WIDE.
    obj: str | None = None
    anonymous: int = 302
    # Answer for an object of another site, whatever the role.
    other: int = 404
    data: dict | Callable[[SimpleNamespace], dict] = field(default_factory=dict)
    # The POST is invalid on purpose: a 200 must carry form errors, and nothing is saved.
    invalid: bool = False
    # Where an authenticated 302 must lead.
    redirect: Callable[[SimpleNamespace], str] | None = None
    # The context name of the form an invalid POST brings back.
    form: str = "form"
    # Tells two rows of the same URL, method and object apart in the test ids.
    label: str = ""
    # Roles whose own-site case the app gets wrong: role → "BUG: ..." (a strict xfail).
    bugs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.obj is None or self.obj in SITE_SCOPED or self.obj in CHAIN_WIDE, self.obj
        assert set(self.bugs) <= set(ROLES), self.bugs

    @property
    def variants(self) -> tuple[str | None, ...]:
        if self.obj in SITE_SCOPED:
            return ("own", "other")
        return (None,)

    def url(self, world: SimpleNamespace, variant: str | None) -> str:
        if self.obj is None:
            return reverse(self.name)
        if self.obj in SITE_SCOPED:
            target = getattr(world, self.obj)[variant]
            return reverse(self.name, kwargs={SITE_SCOPED[self.obj]: target.pk})
        return reverse(self.name, kwargs={CHAIN_WIDE[self.obj]: getattr(world, self.obj).pk})

    def expected_for(self, actor: str, variant: str | None) -> int:
        if actor == ANONYMOUS:
            return self.anonymous
        if variant == "other":
            return self.other
        return self.expected[actor]


def _home(world: SimpleNamespace) -> str:
    return reverse("home")


def _login(world: SimpleNamespace) -> str:
    return reverse("login")


def _draft_detail(world: SimpleNamespace) -> str:
    return reverse("patients:template_detail", kwargs={"template_id": world.draft.pk})


def _published_detail(world: SimpleNamespace) -> str:
    return reverse("patients:template_detail", kwargs={"template_id": world.published.pk})


def _notifications(world: SimpleNamespace) -> str:
    return reverse("notifications")


def _version_draft_detail(world: SimpleNamespace) -> str:
    return reverse("protocols:version_detail", kwargs={"version_id": world.version_draft.pk})


def _version_published_detail(world: SimpleNamespace) -> str:
    return reverse("protocols:version_detail", kwargs={"version_id": world.version_published.pk})


def _assessment_detail(world: SimpleNamespace) -> str:
    return reverse(
        "protocols:assessment_detail", kwargs={"assessment_id": world.assessment["own"].pk}
    )


def _signed_detail(world: SimpleNamespace) -> str:
    return reverse("protocols:assessment_detail", kwargs={"assessment_id": world.signed["own"].pk})


def _assessment_edit(world: SimpleNamespace) -> str:
    return reverse(
        "protocols:assessment_edit", kwargs={"assessment_id": world.assessment["own"].pk}
    )


def _newest_assessment_edit(world: SimpleNamespace) -> str:
    newest = Assessment.objects.latest("pk")
    return reverse("protocols:assessment_edit", kwargs={"assessment_id": newest.pk})


def _session_detail(world: SimpleNamespace) -> str:
    return reverse("monitoring:session", kwargs={"session_id": world.session["own"].pk})


def _worklist(world: SimpleNamespace) -> str:
    return reverse("followups:worklist")


# Valid minimal completions: a role that may not close the follow-up must get 403.
CALL_DONE = {"contact_method": "phone", "outcome": "Slept well, no side effects."}
REVIEW_DONE = {
    "contact_method": "video",
    **{f"phq9_{i}": "0" for i in range(1, 10)},
    **{f"gad7_{i}": "0" for i in range(1, 8)},
    "outcome": "In remission.",
    "password": TEST_PASSWORD,
}
GP_CHECK_DONE = {"contact_method": "phone", "outcome": "No urinary symptoms, feels well."}
REMS_DONE = {"outcome": "REMS patient monitoring form filed."}
MISSED = {"reason": "No answer after three calls."}

MATRIX: list[Row] = [
    # --- clinic ----------------------------------------------------------------------------------
    Row("home", "GET", every_role(200)),
    Row("healthz", "GET", every_role(200), anonymous=200),
    Row("login", "GET", every_role(302), anonymous=200, redirect=_home),
    Row(
        "login",
        "POST",
        every_role(302),
        anonymous=200,
        invalid=True,
        redirect=_home,
        data={"username": "nobody", "password": ""},
    ),
    Row("logout", "GET", every_role(405)),  # Django 5 logs out on POST only
    Row("logout", "POST", every_role(302), redirect=_login),
    Row("password_change", "GET", every_role(200)),
    Row("password_change", "POST", every_role(200), invalid=True, data={"old_password": ""}),
    Row("password_change_done", "GET", every_role(200)),
    Row("switch_site", "GET", every_role(405)),
    # The site posted is the user's own; switching to another site is tested below.
    Row(
        "switch_site",
        "POST",
        every_role(302),
        redirect=_home,
        data=lambda world: {"site": world.site.pk},
    ),
    Row("notifications", "GET", every_role(200)),
    Row("notification_read", "GET", every_role(405)),
    # Marking another user's notification read marks nothing; the user's own are tested below.
    Row(
        "notification_read",
        "POST",
        every_role(302),
        invalid=True,
        redirect=_notifications,
        data=lambda world: {"notification": world.notification.pk},
    ),
    # --- patients ---------------------------------------------------------------------------------
    Row("patients:list", "GET", only(*CAN_VIEW_PATIENTS)),
    Row("patients:register", "GET", only(*CAN_REGISTER)),
    Row("patients:register", "POST", only(*CAN_REGISTER), invalid=True, data={"mrn": ""}),
    Row("patients:chart", "GET", only(*CAN_VIEW_PATIENTS), obj="patient"),
    Row("patients:edit", "GET", only(*CAN_EDIT_PATIENT), obj="patient"),
    Row(
        "patients:edit",
        "POST",
        only(*CAN_EDIT_PATIENT),
        obj="patient",
        invalid=True,
        data={"mrn": ""},
    ),
    Row("patients:void", "GET", only(*CAN_VOID), obj="patient"),
    Row("patients:void", "POST", only(*CAN_VOID), obj="patient", invalid=True, data={"reason": ""}),
    Row("patients:consent_new", "GET", only(*CAN_RECORD_CONSENT), obj="patient"),
    Row(
        "patients:consent_new",
        "POST",
        only(*CAN_RECORD_CONSENT),
        obj="patient",
        invalid=True,
        data={"template": ""},
    ),
    Row("patients:consent_withdraw", "GET", only(*CAN_WITHDRAW), obj="consent"),
    Row(
        "patients:consent_withdraw",
        "POST",
        only(*CAN_WITHDRAW),
        obj="consent",
        invalid=True,
        data={"reason": ""},
    ),
    Row("patients:consent_scan", "GET", only(*CAN_VIEW_CONSENTS), obj="consent"),
    # --- consent templates (chain-wide documents) ----------------------------------------------
    Row("patients:template_list", "GET", only(*CAN_READ_TEMPLATES)),
    Row("patients:template_new", "GET", only(*CAN_WRITE_TEMPLATES)),
    Row(
        "patients:template_new",
        "POST",
        only(*CAN_WRITE_TEMPLATES),
        invalid=True,
        data={"title": ""},
    ),
    Row("patients:template_detail", "GET", only(*CAN_READ_TEMPLATES), obj="draft"),
    Row("patients:template_detail", "GET", only(*CAN_READ_TEMPLATES), obj="published"),
    Row("patients:template_edit", "GET", only(*CAN_WRITE_TEMPLATES), obj="draft"),
    Row(
        "patients:template_edit",
        "POST",
        only(*CAN_WRITE_TEMPLATES),
        obj="draft",
        invalid=True,
        data={"title": ""},
    ),
    # A published version never changes: its edit page sends the administrator back.
    Row(
        "patients:template_edit",
        "GET",
        only(*CAN_WRITE_TEMPLATES, ok=302),
        obj="published",
        redirect=_published_detail,
    ),
    Row("patients:template_publish", "GET", every_role(405), obj="draft"),
    Row(
        "patients:template_publish",
        "POST",
        only(*CAN_WRITE_TEMPLATES, ok=302),
        obj="draft",
        redirect=_draft_detail,
    ),
    # --- protocols and their versions (chain-wide documents) --------------------------------------
    Row("protocols:list", "GET", only(*CAN_READ_PROTOCOLS)),
    # The JSON Schema of the rules (SPEC §G1) describes no clinical record: any signed-in user.
    Row("protocols:rules_schema", "GET", every_role(200)),
    Row("protocols:version_detail", "GET", only(*CAN_READ_PROTOCOLS), obj="version_draft"),
    Row("protocols:version_detail", "GET", only(*CAN_READ_PROTOCOLS), obj="version_published"),
    Row("protocols:version_new", "GET", only(*CAN_WRITE_PROTOCOLS), obj="protocol"),
    Row(
        "protocols:version_new",
        "POST",
        only(*CAN_WRITE_PROTOCOLS),
        obj="protocol",
        invalid=True,
        data={"change_summary": ""},
    ),
    Row("protocols:version_edit", "GET", only(*CAN_WRITE_PROTOCOLS), obj="version_draft"),
    Row(
        "protocols:version_edit",
        "POST",
        only(*CAN_WRITE_PROTOCOLS),
        obj="version_draft",
        invalid=True,
        data={"change_summary": ""},
    ),
    # A published version never changes: its edit page sends the administrator back.
    Row(
        "protocols:version_edit",
        "GET",
        only(*CAN_WRITE_PROTOCOLS, ok=302),
        obj="version_published",
        redirect=_version_published_detail,
    ),
    Row("protocols:version_publish", "GET", every_role(405), obj="version_draft"),
    Row(
        "protocols:version_publish",
        "POST",
        only(*CAN_WRITE_PROTOCOLS, ok=302),
        obj="version_draft",
        redirect=_version_draft_detail,
    ),
    # Publishing again is refused with a message; nothing changes.
    Row(
        "protocols:version_publish",
        "POST",
        only(*CAN_WRITE_PROTOCOLS, ok=302),
        obj="version_published",
        invalid=True,
        redirect=_version_published_detail,
    ),
    # --- treatment courses ------------------------------------------------------------------------
    Row("protocols:course_new", "GET", only(*CAN_START_COURSE), obj="patient"),
    Row(
        "protocols:course_new",
        "POST",
        only(*CAN_START_COURSE),
        obj="patient",
        invalid=True,
        data={"protocol": ""},
    ),
    Row("followups:course_status", "GET", only(*CAN_CHANGE_COURSE), obj="course"),
    Row(
        "followups:course_status",
        "POST",
        only(*CAN_CHANGE_COURSE),
        obj="course",
        invalid=True,
        data={"status": ""},
    ),
    # --- assessments ------------------------------------------------------------------------------
    Row("protocols:assessment_new", "GET", every_role(405), obj="course", other=405),
    Row(
        "protocols:assessment_new",
        "POST",
        only(*CAN_EDIT_ASSESSMENT, ok=302),
        obj="course",
        redirect=_newest_assessment_edit,
    ),
    Row("protocols:assessment_detail", "GET", only(*CAN_VIEW_ASSESSMENTS), obj="assessment"),
    Row("protocols:assessment_detail", "GET", only(*CAN_VIEW_ASSESSMENTS), obj="signed"),
    Row("protocols:assessment_edit", "GET", only(*CAN_EDIT_ASSESSMENT), obj="assessment"),
    Row(
        "protocols:assessment_edit",
        "POST",
        only(*CAN_EDIT_ASSESSMENT),
        obj="assessment",
        invalid=True,
        data={"sbp": "not a number"},
    ),
    # A signed assessment is locked: its edit page sends the editor to the record.
    Row(
        "protocols:assessment_edit",
        "GET",
        only(*CAN_EDIT_ASSESSMENT, ok=302),
        obj="signed",
        redirect=_signed_detail,
    ),
    Row("protocols:assessment_submit", "GET", every_role(405), obj="assessment", other=405),
    # The draft is incomplete: submitting lists the missing items on the edit page.
    Row(
        "protocols:assessment_submit",
        "POST",
        only(*CAN_EDIT_ASSESSMENT, ok=302),
        obj="assessment",
        invalid=True,
        redirect=_assessment_edit,
    ),
    Row("protocols:assessment_sign", "GET", only(*CAN_SIGN_ASSESSMENT), obj="submitted"),
    Row(
        "protocols:assessment_sign",
        "POST",
        only(*CAN_SIGN_ASSESSMENT),
        obj="submitted",
        invalid=True,
        data={"decision": "", "password": ""},
    ),
    # Only a submitted assessment can be signed: a draft sends the psychiatrist back.
    Row(
        "protocols:assessment_sign",
        "GET",
        only(*CAN_SIGN_ASSESSMENT, ok=302),
        obj="assessment",
        redirect=_assessment_detail,
    ),
    Row("protocols:addendum_new", "GET", only(*CAN_ADD_ADDENDUM), obj="signed"),
    Row(
        "protocols:addendum_new",
        "POST",
        only(*CAN_ADD_ADDENDUM),
        obj="signed",
        invalid=True,
        data={"text": "", "reason": "", "password": ""},
    ),
    # Addenda are for signed records: a draft sends the author back to it.
    Row(
        "protocols:addendum_new",
        "GET",
        only(*CAN_ADD_ADDENDUM, ok=302),
        obj="assessment",
        redirect=_assessment_detail,
    ),
    Row("protocols:signoff_queue", "GET", only(*CAN_SIGN_ASSESSMENT)),
    # --- monitoring: sessions (SPEC §M) -----------------------------------------------------------
    Row("monitoring:floor", "GET", only(*CAN_VIEW_SESSIONS)),
    Row("monitoring:session_new", "GET", only(*CAN_SCHEDULE), obj="course"),
    Row(
        "monitoring:session_new",
        "POST",
        only(*CAN_SCHEDULE),
        obj="course",
        invalid=True,
        data={"chair": ""},
    ),
    Row("monitoring:session", "GET", only(*CAN_VIEW_SESSIONS), obj="session"),
    Row("monitoring:session", "GET", only(*CAN_VIEW_SESSIONS), obj="dosing"),
    Row("monitoring:session_live", "GET", only(*CAN_VIEW_SESSIONS), obj="dosing"),
    Row("monitoring:report", "GET", only(*CAN_VIEW_SESSIONS), obj="dosing"),
    Row("monitoring:check_in", "GET", only(*CHAIRSIDE), obj="session"),
    # Escort confirmed but not named: a field error.
    Row(
        "monitoring:check_in",
        "POST",
        only(*CHAIRSIDE),
        obj="session",
        invalid=True,
        data={"escort_confirmed": "on", "escort_details": ""},
    ),
    Row("monitoring:predose_decision", "GET", only(*CAN_DECIDE_PREDOSE), obj="session"),
    Row(
        "monitoring:predose_decision",
        "POST",
        only(*CAN_DECIDE_PREDOSE),
        obj="session",
        invalid=True,
        data={"decision": "", "reason": ""},
    ),
    Row("monitoring:dose_new", "GET", only(*CHAIRSIDE), obj="session"),
    Row(
        "monitoring:dose_new",
        "POST",
        only(*CHAIRSIDE),
        obj="session",
        invalid=True,
        data={"lot": "", "dose_mg": ""},
    ),
    Row("monitoring:dose_complete", "GET", every_role(405), obj="session", other=405),
    # No end time: the session page comes back with a message.
    Row(
        "monitoring:dose_complete",
        "POST",
        only(*CHAIRSIDE, ok=302),
        obj="session",
        invalid=True,
        redirect=_session_detail,
    ),
    Row("monitoring:vitals_new", "GET", every_role(405), obj="session", other=405),
    Row(
        "monitoring:vitals_new",
        "POST",
        only(*CHAIRSIDE),
        obj="checked_in",
        invalid=True,
        form="vitals_form",
        data={"sbp": "high"},
    ),
    Row("monitoring:observation_new", "GET", only(*CHAIRSIDE), obj="session"),
    Row(
        "monitoring:observation_new",
        "POST",
        only(*CHAIRSIDE),
        obj="session",
        invalid=True,
        data={"kind": ""},
    ),
    Row("monitoring:discharge", "GET", only(*CAN_DISCHARGE), obj="session"),
    Row(
        "monitoring:discharge",
        "POST",
        only(*CAN_DISCHARGE),
        obj="session",
        invalid=True,
        data={"password": ""},
    ),
    Row("monitoring:abort", "GET", only(*CHAIRSIDE), obj="session"),
    Row(
        "monitoring:abort",
        "POST",
        only(*CHAIRSIDE),
        obj="session",
        invalid=True,
        data={"reason": ""},
    ),
    Row("monitoring:vitals_error", "GET", only(*CHAIRSIDE), obj="reading"),
    Row(
        "monitoring:vitals_error",
        "POST",
        only(*CHAIRSIDE),
        obj="reading",
        invalid=True,
        data={"reason": ""},
    ),
    Row("monitoring:alert_acknowledge", "GET", only(*CAN_ACKNOWLEDGE), obj="alert"),
    Row(
        "monitoring:alert_acknowledge",
        "POST",
        only(*CAN_ACKNOWLEDGE),
        obj="alert",
        invalid=True,
        data={"action_taken": ""},
    ),
    Row("monitoring:check_excuse", "GET", only(*CHAIRSIDE), obj="check"),
    Row(
        "monitoring:check_excuse",
        "POST",
        only(*CHAIRSIDE),
        obj="check",
        invalid=True,
        data={"reason": ""},
    ),
    # --- monitoring: the controlled-substance register (SPEC §M12) --------------------------------
    Row("monitoring:register", "GET", only(*CAN_VIEW_REGISTER)),
    Row("monitoring:register_csv", "GET", only(*CAN_EXPORT_REGISTER)),
    Row("monitoring:lot_new", "GET", only(*CAN_RECEIVE_LOT)),
    Row(
        "monitoring:lot_new",
        "POST",
        only(*CAN_RECEIVE_LOT),
        invalid=True,
        data={"drug": "ketamine", "lot_number": ""},
    ),
    Row("monitoring:waste_new", "GET", only(*CAN_WASTE), obj="lot"),
    Row(
        "monitoring:waste_new",
        "POST",
        only(*CAN_WASTE),
        obj="lot",
        invalid=True,
        data={"amount_mg": "", "reason": ""},
    ),
    # --- follow-ups (SPEC §F) ---------------------------------------------------------------------
    Row("followups:worklist", "GET", only(*CAN_VIEW_FOLLOWUPS)),
    Row("followups:complete", "GET", only(*CAN_COMPLETE_FOLLOWUPS), obj="followup"),
    # Who may close it is decided before the form (followups.permissions): the nurse's call.
    Row(
        "followups:complete",
        "POST",
        only("nurse", "psychiatrist"),
        obj="followup",
        invalid=True,
        label="invalid",
        data={"sbp": "high"},
    ),
    # Who may close which follow-up: its assigned role (a psychiatrist any clinical one).
    Row(
        "followups:complete",
        "POST",
        only("nurse", "psychiatrist", ok=302),
        obj="followup",
        label="valid",
        redirect=_worklist,
        data=CALL_DONE,
    ),
    Row(
        "followups:complete",
        "POST",
        only("psychiatrist", ok=302),
        obj="review",
        redirect=_worklist,
        data=REVIEW_DONE,
    ),
    Row(
        "followups:complete",
        "POST",
        only("gp", "psychiatrist", ok=302),
        obj="gp_check",
        redirect=_worklist,
        data=GP_CHECK_DONE,
    ),
    Row(
        "followups:complete",
        "POST",
        only("administrator", ok=302),
        obj="rems",
        redirect=_worklist,
        data=REMS_DONE,
    ),
    # A closed follow-up is a read-only record: every reader sees it, and a POST changes nothing.
    Row("followups:complete", "GET", only(*CAN_VIEW_FOLLOWUPS), obj="followup_closed"),
    Row(
        "followups:complete",
        "POST",
        only(*CAN_VIEW_FOLLOWUPS),
        obj="followup_closed",
        data=CALL_DONE,
    ),
    Row("followups:missed", "GET", only(*CAN_COMPLETE_FOLLOWUPS), obj="followup"),
    Row(
        "followups:missed",
        "POST",
        only("nurse", "psychiatrist"),
        obj="followup",
        invalid=True,
        label="invalid",
        data={"reason": ""},
    ),
    Row(
        "followups:missed",
        "POST",
        only("nurse", "psychiatrist", ok=302),
        obj="followup",
        label="valid",
        redirect=_worklist,
        data=MISSED,
    ),
    Row(
        "followups:missed",
        "POST",
        only("administrator", ok=302),
        obj="rems",
        redirect=_worklist,
        data=MISSED,
    ),
]


# --- compliance (SPEC §C5) ------------------------------------------------------------------------
# Read-only pages for holders of audit.view_compliance (administrators, audit migration 0002).
# The site is a query parameter: another site answers 404 to those who may see compliance at all.
CAN_VIEW_COMPLIANCE = ("administrator",)


@dataclass(frozen=True)
class ComplianceRow(Row):
    """A compliance page: a figure in the path (or none), the site in the query string."""

    figure: str = ""
    site: str = "own"  # own | other

    def url(self, world: SimpleNamespace, variant: str | None) -> str:
        kwargs = {"figure": self.figure} if self.figure else {}
        target = world.site if self.site == "own" else world.other_site
        return f"{reverse(self.name, kwargs=kwargs)}?site={target.pk}"


MATRIX += [
    ComplianceRow("compliance:dashboard", "GET", only(*CAN_VIEW_COMPLIANCE)),
    ComplianceRow(
        "compliance:dashboard",
        "GET",
        only(*CAN_VIEW_COMPLIANCE, ok=404),
        site="other",
        label="other-site",
    ),
    ComplianceRow("compliance:dashboard", "POST", every_role(405)),
    ComplianceRow("compliance:list", "GET", only(*CAN_VIEW_COMPLIANCE), figure="discharges"),
    ComplianceRow(
        "compliance:list",
        "GET",
        only(*CAN_VIEW_COMPLIANCE, ok=404),
        figure="discharges",
        site="other",
        label="other-site",
    ),
    ComplianceRow(
        "compliance:list",
        "GET",
        only(*CAN_VIEW_COMPLIANCE, ok=404),
        figure="no-such-figure",
        label="unknown-figure",
    ),
    ComplianceRow("compliance:export", "GET", only(*CAN_VIEW_COMPLIANCE), figure="discharges"),
    ComplianceRow(
        "compliance:export",
        "GET",
        only(*CAN_VIEW_COMPLIANCE, ok=404),
        figure="discharges",
        site="other",
        label="other-site",
    ),
    ComplianceRow("compliance:export", "POST", every_role(405), figure="discharges"),
]


# --- audit viewer (SPEC §C6) ----------------------------------------------------------------------
# Administrators only (audit.view_auditevent and audit.view_verificationrun, audit migration 0002).
# The permission is checked before the object is looked up: every other role gets 403 whatever
# the object (which tells nothing about it), an administrator gets 404 for a record, patient or
# staff member outside their sites. Record trails address any audited record by type and id.
CAN_AUDIT = ("administrator",)


def _verification_run(world: SimpleNamespace, variant: str | None) -> dict:
    now = timezone.now()
    run = VerificationRun.objects.create(
        started_at=now,
        finished_at=now,
        ok=True,
        chains=0,
        links=0,
        signatures=0,
        problems=0,
        triggered_by="matrix",
    )
    return {"pk": run.pk}


@dataclass(frozen=True)
class AuditRow(Row):
    """An audit page; `address` gives its URL keywords for a variant, `per_site` asks for an
    own-site and an other-site variant."""

    address: Callable[[SimpleNamespace, str | None], dict] | None = None
    per_site: bool = False

    @property
    def variants(self) -> tuple[str | None, ...]:
        return VARIANTS if self.per_site else (None,)

    def url(self, world: SimpleNamespace, variant: str | None) -> str:
        return reverse(self.name, kwargs=self.address(world, variant) if self.address else {})

    def expected_for(self, actor: str, variant: str | None) -> int:
        if variant == "other" and actor in ROLES and self.expected[actor] == 403:
            return 403
        return super().expected_for(actor, variant)


def _trail_of(object_type: str, obj: str) -> Callable[[SimpleNamespace, str | None], dict]:
    def address(world: SimpleNamespace, variant: str | None) -> dict:
        return {"object_type": object_type, "object_id": getattr(world, obj)[variant].pk}

    return address


MATRIX += [
    AuditRow("audit:events", "GET", only(*CAN_AUDIT)),
    AuditRow("audit:events", "POST", every_role(405)),
    AuditRow("audit:events_export", "GET", only(*CAN_AUDIT)),
    AuditRow(
        "audit:record",
        "GET",
        only(*CAN_AUDIT),
        per_site=True,
        label="patient",
        address=_trail_of("patients.patient", "patient"),
    ),
    AuditRow(
        "audit:record",
        "GET",
        only(*CAN_AUDIT),
        per_site=True,
        label="session",
        address=_trail_of("monitoring.treatmentsession", "session"),
    ),
    AuditRow(
        "audit:record",
        "GET",
        only(*CAN_AUDIT),
        per_site=True,
        label="staff",
        address=_trail_of("clinic.user", "staff"),
    ),
    # A chain-wide document has no site: every administrator may read its trail.
    AuditRow(
        "audit:record",
        "GET",
        only(*CAN_AUDIT),
        label="template",
        address=lambda world, variant: {
            "object_type": "patients.consenttemplate",
            "object_id": world.published.pk,
        },
    ),
    AuditRow(
        "audit:record_export",
        "GET",
        only(*CAN_AUDIT),
        per_site=True,
        label="patient",
        address=_trail_of("patients.patient", "patient"),
    ),
    AuditRow(
        "audit:patient",
        "GET",
        only(*CAN_AUDIT),
        per_site=True,
        address=lambda world, variant: {"pk": world.patient[variant].pk},
    ),
    AuditRow(
        "audit:user",
        "GET",
        only(*CAN_AUDIT),
        per_site=True,
        address=lambda world, variant: {"pk": world.staff[variant].pk},
    ),
    AuditRow("audit:verifications", "GET", only(*CAN_AUDIT)),
    AuditRow("audit:verification", "GET", only(*CAN_AUDIT), address=_verification_run),
]


def _cases() -> list:
    cases = []
    for row in MATRIX:
        for variant in row.variants:
            for actor in (ANONYMOUS, *ROLES):
                parts = [row.name, row.method, actor]
                if row.label:
                    parts.append(row.label)
                if row.obj:
                    parts.append(row.obj)
                if variant:
                    parts.append(variant)
                bug = row.bugs.get(actor) if variant != "other" else None
                marks = pytest.mark.xfail(strict=True, reason=bug) if bug else ()
                cases.append(pytest.param(row, actor, variant, id="-".join(parts), marks=marks))
    return cases


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Every test here creates seven staff accounts with a password; full-strength PBKDF2 would
    # make the ~1,100 cases take many minutes. force_login never checks the password.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class PerSite(dict):
    """An object per site variant (`own`, `other`), each built on first use: a row addresses
    one variant, so a case never pays for the other."""

    def __init__(self, build: Callable[[str], object]) -> None:
        super().__init__()
        self._build = build

    def __missing__(self, variant: str) -> object:
        assert variant in VARIANTS, variant
        self[variant] = built = self._build(variant)
        return built


class World(SimpleNamespace):
    """The objects rows address. Step 1 to 3 records are built on first use: most rows need none.

    In each site (`own`, `other`): a course on the shipped IV-ketamine protocol and assessments of
    it at three stages (a blank draft, a submitted one, a signed-approved one); sessions scheduled,
    checked in and dosing (with a critical alert and open checks); a ketamine lot; the course's
    follow-up plan, and an esketamine course's REMS form. Chain-wide: the IV-ketamine protocol
    with its shipped (published) version, and a draft of its next version.
    """

    @cached_property
    def version_draft(self) -> ProtocolVersion:
        return services.protocol_version_create(
            protocol=self.protocol,
            acting_user=self.administrator,
            rules=self.version_published.rules,
            change_summary="Next version, not final yet",
        )

    @cached_property
    def prescriber(self) -> dict[str, User]:
        return PerSite(self._prescriber)

    @cached_property
    def course(self) -> dict[str, TreatmentCourse]:
        return PerSite(lambda variant: self._start_course(variant, self.protocol))

    @cached_property
    def assessment(self) -> dict[str, Assessment]:
        return PerSite(
            lambda variant: services.assessment_create(
                course=self.course[variant], acting_user=self.staff[variant]
            )
        )

    @cached_property
    def submitted(self) -> dict[str, Assessment]:
        return PerSite(self._submit)

    @cached_property
    def signed(self) -> dict[str, Assessment]:
        return PerSite(
            lambda variant: services.assessment_sign(
                assessment=self._submit(variant),
                signer=self.prescriber[variant],
                password=TEST_PASSWORD,
                approve=True,
            )
        )

    @cached_property
    def notification(self) -> Notification:
        """An unread notification of `outsider`, whom no row logs in as."""
        return notify(recipient=self.outsider, kind=Notification.Kind.INFO, title="Not yours")

    def _prescriber(self, variant: str) -> User:
        if variant == "own":
            return self.psychiatrist
        return UserFactory(
            username="outsider-psychiatrist", roles=[Role.PSYCHIATRIST], sites=[self.other_site]
        )

    def _start_course(self, variant: str, protocol: Protocol) -> TreatmentCourse:
        return services.course_start(
            patient=self.patient[variant],
            protocol=protocol,
            acting_user=self.staff[variant],
            indication=TreatmentCourse.Indication.TRD,
            responsible_psychiatrist=self.prescriber[variant],
            planned_sessions=6,
        )

    def _submit(self, variant: str) -> Assessment:
        course, author = self.course[variant], self.staff[variant]
        started = services.assessment_create(course=course, acting_user=author)
        filled = services.assessment_update(
            assessment=started, acting_user=author, **complete_fields(course)
        )
        return services.assessment_submit(assessment=filled, acting_user=author)

    # --- Step 2 -----------------------------------------------------------------------------------

    @cached_property
    def session(self) -> dict[str, TreatmentSession]:
        return PerSite(self._schedule)

    @cached_property
    def checked_in(self) -> dict[str, TreatmentSession]:
        return PerSite(self._check_in)

    @cached_property
    def lot(self) -> dict[str, DrugLot]:
        return PerSite(
            lambda variant: monitoring_services.lot_receive(
                site=self.patient[variant].home_site,
                acting_user=self.staff[variant],
                drug=DrugLot.Drug.KETAMINE,
                lot_number="KET-MATRIX-1",
                concentration_mg_per_ml=Decimal("10"),
                expires_on=timezone.localdate() + timedelta(days=365),
                received_mg=Decimal("1000"),
            )
        )

    @cached_property
    def dosing(self) -> dict[str, TreatmentSession]:
        return PerSite(self._dose)

    @cached_property
    def reading(self) -> dict[str, VitalReading]:
        return PerSite(lambda variant: self.dosing[variant].vitals.order_by("pk").first())

    @cached_property
    def alert(self) -> dict[str, Alert]:
        return PerSite(lambda variant: self.dosing[variant].alerts.get(level=Alert.Level.CRITICAL))

    @cached_property
    def check(self) -> dict[str, RequiredCheck]:
        return PerSite(
            lambda variant: (
                self.dosing[variant]
                .checks.required()
                .filter(satisfied_at__isnull=True, due_at__isnull=False)
                .order_by("due_at", "pk")
                .first()
            )
        )

    def _schedule(self, variant: str) -> TreatmentSession:
        return monitoring_services.session_schedule(
            course=self.course[variant],
            acting_user=self.staff[variant],
            scheduled_at=timezone.now(),
            chair="4",
            supervising_clinician=self.prescriber[variant],
        )

    def _check_in(self, variant: str) -> TreatmentSession:
        return monitoring_services.session_check_in(
            session=self._schedule(variant),
            acting_user=self.staff[variant],
            escort_confirmed=True,
            escort_details="Sister, by car",
        )

    def _dose(self, variant: str) -> TreatmentSession:
        """Checked in on an approved course, dosed, then a critical SpO2 reading."""
        self.signed[variant]  # the signed-approved assessment makes the course active
        author, lot = self.staff[variant], self.lot[variant]
        session = self._check_in(variant)
        monitoring_services.vitals_record(session=session, acting_user=author, **NORMAL_VITALS)
        dose_mg = Decimal(session.patient.weight_kg) * Decimal("0.5")
        monitoring_services.dose_record(
            session=session,
            acting_user=author,
            lot=lot,
            dose_mg=dose_mg,
            volume_ml=dose_mg / lot.concentration_mg_per_ml,
            started_at=timezone.now(),
            prescriber=self.prescriber[variant],
        )
        monitoring_services.vitals_record(
            session=session, acting_user=author, **{**NORMAL_VITALS, "spo2": 85}
        )
        session.refresh_from_db()
        return session

    # --- Step 3 -----------------------------------------------------------------------------------

    @cached_property
    def plan(self) -> dict[str, dict[str, FollowUp]]:
        """The IV-ketamine discharge plan of each site's course, by follow-up code."""
        return PerSite(lambda variant: self._plan(self.course[variant], variant))

    @cached_property
    def followup(self) -> dict[str, FollowUp]:
        return PerSite(lambda variant: self.plan[variant]["next_day_call"])

    @cached_property
    def review(self) -> dict[str, FollowUp]:
        return PerSite(lambda variant: self.plan[variant]["day7_review"])

    @cached_property
    def gp_check(self) -> dict[str, FollowUp]:
        return PerSite(lambda variant: self.plan[variant]["gp_day28"])

    @cached_property
    def followup_closed(self) -> dict[str, FollowUp]:
        """The 28-day review, recorded as missed."""
        return PerSite(self._miss_the_late_review)

    @cached_property
    def rems(self) -> dict[str, FollowUp]:
        """The administrators' REMS form, from the plan of an esketamine course."""
        esketamine = Protocol.objects.get(slug="esketamine-rems")
        return PerSite(
            lambda variant: self._plan(self._start_course(variant, esketamine), variant)[
                "rems_form"
            ]
        )

    def _plan(self, course: TreatmentCourse, variant: str) -> dict[str, FollowUp]:
        plan = followup_services.plan_from(
            course=course, start=timezone.now(), acting_user=self.staff[variant]
        )
        return {followup.code: followup for followup in plan}

    def _miss_the_late_review(self, variant: str) -> FollowUp:
        return followup_services.followup_mark_missed(
            followup=self.plan[variant]["day28_review"],
            acting_user=self.prescriber[variant],
            reason="Moved abroad.",
        )


@pytest.fixture
def world(settings, tmp_path, site, other_site, nurse, psychiatrist, outsider, administrator):
    """One of each object in `site` and in `other_site`, plus the chain-wide documents."""
    settings.MEDIA_ROOT = tmp_path
    published = ConsentTemplateFactory(created_by=administrator)
    draft = ConsentTemplateFactory(created_by=administrator, published_at=None, published_by=None)
    protocol = Protocol.objects.get(slug="iv-ketamine")
    staff = {"own": nurse, "other": outsider}
    patients, consents = {}, {}
    for variant, home_site in (("own", site), ("other", other_site)):
        patients[variant] = PatientFactory(home_site=home_site, created_by=staff[variant])
        consents[variant] = ConsentRecordFactory(
            patient=patients[variant],
            template=published,
            witness=staff[variant],
            signature_method=ConsentRecord.SignatureMethod.WET_SCANNED,
            scan=ContentFile(PDF_SCAN, name="scan.pdf"),
            scan_content_type="application/pdf",
        )
    return World(
        site=site,
        other_site=other_site,
        outsider=outsider,
        psychiatrist=psychiatrist,
        administrator=administrator,
        staff=staff,
        patient=patients,
        consent=consents,
        draft=draft,
        published=published,
        protocol=protocol,
        version_published=protocol.versions.published().latest("version"),
    )


# Everything a form on these pages could write: with a history, and without one.
RECORDED = (
    Patient,
    ConsentRecord,
    ConsentTemplate,
    User,
    Site,
    Protocol,
    ProtocolVersion,
    TreatmentCourse,
    Assessment,
    Addendum,
    TreatmentSession,
    DoseAdministration,
    VitalReading,
    Alert,
    RequiredCheck,
    Observation,
    Discharge,
    DrugLot,
    Incident,
    FollowUp,
)
UNRECORDED = (Signature, SignatureFailure, Notification, ControlledSubstanceEntry, Reminder)


def _saved_state() -> tuple:
    """Row counts, history counts and the workflow states a form on these pages could change."""
    return (
        tuple((model.objects.count(), model.history.count()) for model in RECORDED),
        tuple(model.objects.count() for model in UNRECORDED),
        tuple(ConsentTemplate.objects.filter(published_at__isnull=True).values_list("pk")),
        tuple(ProtocolVersion.objects.filter(published_at__isnull=True).values_list("pk")),
        tuple(TreatmentCourse.objects.order_by("pk").values_list("pk", "status")),
        tuple(Assessment.objects.order_by("pk").values_list("pk", "status")),
        tuple(Notification.objects.filter(read_at__isnull=True).values_list("pk")),
        tuple(
            TreatmentSession.objects.order_by("pk").values_list(
                "pk", "status", "escort_confirmed", "predose_decision"
            )
        ),
        tuple(VitalReading.objects.filter(entered_in_error_at__isnull=True).values_list("pk")),
        tuple(Alert.objects.filter(acknowledged_at__isnull=True).values_list("pk")),
        tuple(RequiredCheck.objects.filter(excused_reason="").values_list("pk")),
        tuple(FollowUp.objects.order_by("pk").values_list("pk", "state")),
        tuple(Reminder.objects.order_by("pk").values_list("pk", "state")),
    )


@pytest.mark.parametrize(("row", "actor", "variant"), _cases())
def test_each_actor_gets_the_answer_its_role_allows(request, client, world, row, actor, variant):
    if actor != ANONYMOUS:
        client.force_login(request.getfixturevalue(actor))
    url = row.url(world, variant)
    data = row.data(world) if callable(row.data) else row.data
    before = _saved_state()

    response = client.post(url, data) if row.method == "POST" else client.get(url)

    expected = row.expected_for(actor, variant)
    try:
        assert response.status_code == expected, (
            f"{row.method} {url} as {actor}: {response.status_code}, expected {expected}"
        )
        if expected == 302 and actor == ANONYMOUS:
            assert response["Location"].startswith(f"{reverse('login')}?next="), response[
                "Location"
            ]
        elif expected == 302 and row.redirect:
            assert response["Location"] == row.redirect(world)
        if expected == 200 and response.streaming:
            b"".join(response.streaming_content)  # a CSV export fails while it streams
        if expected == 200 and row.invalid:
            assert response.context[row.form].errors, "the form came back without errors"
        if expected != 302 or actor == ANONYMOUS or row.invalid:
            assert _saved_state() == before, "a refused or invalid request saved something"
    finally:
        response.close()  # the scan view streams a file


def test_the_matrix_has_a_row_for_every_named_url():
    """A new URL pattern fails here until it gets its rows (the admin is tested on its own)."""
    named, unnamed = set(), []

    def walk(resolver: URLResolver, prefix: str, route: str) -> None:
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace == "admin":
                    continue
                namespace = f"{prefix}{pattern.namespace}:" if pattern.namespace else prefix
                walk(pattern, namespace, route + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                if pattern.name:
                    named.add(prefix + pattern.name)
                else:
                    unnamed.append(route + str(pattern.pattern))

    walk(get_resolver(), "", "")

    covered = {row.name for row in MATRIX}
    assert not unnamed, f"URL patterns without a name cannot have rows: {unnamed}"
    missing, stale = sorted(named - covered), sorted(covered - named)
    assert not missing, f"named URLs without a row in MATRIX: {', '.join(missing)}"
    assert not stale, f"rows for URLs that no longer exist: {', '.join(stale)}"


def test_the_matrix_has_no_duplicate_test_ids():
    ids = [case.id for case in _cases()]
    assert len(ids) == len(set(ids))


def test_switching_to_a_site_the_user_does_not_belong_to_changes_nothing(client, world, nurse):
    client.force_login(nurse)

    response = client.post(reverse("switch_site"), {"site": world.other_site.pk})

    assert response.status_code == 302
    assert client.session.get(SESSION_KEY) != world.other_site.pk
    refused = [str(message) for message in get_messages(response.wsgi_request)]
    assert refused == ["You are not a member of that site."]


# --- Notifications belong to one user -------------------------------------------------------------


def _unread(user: User) -> set[int]:
    return set(
        Notification.objects.filter(recipient=user, read_at__isnull=True).values_list(
            "pk", flat=True
        )
    )


def test_the_notification_list_shows_only_the_users_own(client, world, nurse, psychiatrist):
    outsiders = world.notification
    own = notify(recipient=nurse, kind=Notification.Kind.INFO, title="Yours")
    notify(recipient=psychiatrist, kind=Notification.Kind.INFO, title="A colleague's")
    client.force_login(nurse)

    response = client.get(reverse("notifications"))

    assert response.status_code == 200
    assert [note.pk for note in response.context["notifications"]] == [own.pk]
    assert b"A colleague" not in response.content
    assert outsiders.title.encode() not in response.content


def test_marking_one_read_marks_only_that_one_of_the_users_own(client, world, nurse):
    outsiders = world.notification
    first = notify(recipient=nurse, kind=Notification.Kind.INFO, title="First")
    second = notify(recipient=nurse, kind=Notification.Kind.INFO, title="Second")
    client.force_login(nurse)

    response = client.post(reverse("notification_read"), {"notification": first.pk})

    assert response.status_code == 302
    assert _unread(nurse) == {second.pk}
    assert _unread(world.outsider) == {outsiders.pk}


def test_marking_all_read_leaves_other_users_notifications_unread(
    client, world, nurse, psychiatrist
):
    outsiders = world.notification
    notify(recipient=nurse, kind=Notification.Kind.INFO, title="First")
    notify(recipient=nurse, kind=Notification.Kind.INFO, title="Second")
    colleague = notify(recipient=psychiatrist, kind=Notification.Kind.INFO, title="A colleague's")
    client.force_login(nurse)

    response = client.post(reverse("notification_read"))

    assert response.status_code == 302
    assert _unread(nurse) == set()
    assert _unread(psychiatrist) == {colleague.pk}
    assert _unread(world.outsider) == {outsiders.pk}


# --- The Django admin -----------------------------------------------------------------------------


def test_admin_sends_anonymous_visitors_to_the_admin_login(client):
    response = client.get(reverse("admin:index"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_admin_turns_away_staff_who_are_not_administrators(client, nurse):
    client.force_login(nurse)

    response = client.get(reverse("admin:index"))

    assert response.status_code in {302, 403}
    if response.status_code == 302:
        assert response["Location"].startswith(reverse("admin:login"))


def test_admin_opens_for_the_administrator(client, administrator):
    client.force_login(administrator)

    assert client.get(reverse("admin:index")).status_code == 200


@pytest.mark.parametrize(
    ("model", "changelist"),
    [
        pytest.param(Patient, "admin:patients_patient_changelist", id="patients"),
        pytest.param(ConsentRecord, "admin:patients_consentrecord_changelist", id="consents"),
    ],
)
def test_admin_lists_only_the_administrators_own_site_records(
    client, world, administrator, model, changelist
):
    client.force_login(administrator)

    response = client.get(reverse(changelist))

    assert response.status_code == 200
    shown = {obj.pk for obj in response.context["cl"].result_list}
    own = world.patient["own"] if model is Patient else world.consent["own"]
    assert shown == {own.pk}


def test_admin_patient_list_leaks_no_other_site_identifiers(client, world, administrator):
    client.force_login(administrator)

    content = client.get(reverse("admin:patients_patient_changelist")).content.decode()

    assert world.patient["own"].mrn in content
    assert world.patient["other"].mrn not in content


@pytest.mark.parametrize("model_name", ["patient", "consentrecord"])
def test_admin_offers_no_add_change_or_delete_for_clinical_records(
    client, world, administrator, model_name
):
    client.force_login(administrator)
    own = world.patient["own"] if model_name == "patient" else world.consent["own"]
    before = _saved_state()

    add = client.get(reverse(f"admin:patients_{model_name}_add"))
    change_post = client.post(reverse(f"admin:patients_{model_name}_change", args=[own.pk]), {})
    delete = client.get(reverse(f"admin:patients_{model_name}_delete", args=[own.pk]))
    changelist = client.get(reverse(f"admin:patients_{model_name}_changelist"))

    assert add.status_code == 403
    assert change_post.status_code == 403
    assert delete.status_code == 403
    assert changelist.status_code == 200
    action_form = changelist.context.get("action_form")
    actions = dict(action_form.fields["action"].choices) if action_form else {}
    assert "delete_selected" not in actions
    assert b'value="delete_selected"' not in changelist.content
    assert _saved_state() == before


@pytest.mark.parametrize("model_name", ["patient", "consentrecord"])
def test_admin_answers_an_other_site_record_as_if_it_did_not_exist(
    client, world, administrator, model_name
):
    client.force_login(administrator)
    other = world.patient["other"] if model_name == "patient" else world.consent["other"]
    missing_id = type(other).objects.order_by("-pk").first().pk + 1000

    for_other = client.get(reverse(f"admin:patients_{model_name}_change", args=[other.pk]))
    for_missing = client.get(reverse(f"admin:patients_{model_name}_change", args=[missing_id]))

    assert for_other.status_code == for_missing.status_code
    assert for_other.status_code in {302, 404}


@pytest.mark.parametrize(
    ("app_model", "other_record"),
    [
        pytest.param("patients_patient", lambda w: w.patient["other"], id="patient"),
        pytest.param("patients_consentrecord", lambda w: w.consent["other"], id="consentrecord"),
        pytest.param("clinic_user", lambda w: w.outsider, id="staff-of-other-site"),
    ],
)
def test_admin_history_of_an_other_site_record_is_not_shown(
    client, world, administrator, app_model, other_record
):
    """SPEC §U: a record outside the user's sites answers 404, in its admin history pages too."""
    client.force_login(administrator)
    other = other_record(world)
    history_id = other.history.latest().history_id

    history = client.get(reverse(f"admin:{app_model}_history", args=[other.pk]))
    version = client.get(reverse(f"admin:{app_model}_simple_history", args=[other.pk, history_id]))

    assert (history.status_code, version.status_code) == (404, 404)
