"""Writes for Step 1: protocol versions, treatment courses, assessments and their sign-off."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone
from django.utils.text import capfirst

from clinic import signatures
from clinic.models import Notification, Role, Signature, User
from clinic.notifications import notify
from clinic.services import attribute
from patients.models import Patient
from protocols import instruments
from protocols.models import Assessment, Protocol, ProtocolVersion, TreatmentCourse

# Re-exported: plausibility is judged in protocols.plausibility, shared by every step.
from protocols.plausibility import (  # noqa: F401
    DBP_NOT_BELOW_SBP,
    PLAUSIBILITY,
    plausibility_errors,
)

VERSION_PUBLISHED = "A published protocol version never changes; create a new version."
NO_PUBLISHED_VERSION = "This protocol has no published version yet."
NOT_A_PSYCHIATRIST = "The responsible psychiatrist must be an active psychiatrist of the site."
ASSESSMENT_NOT_EDITABLE = "Only draft or submitted assessments can be edited."
ASSESSMENT_NOT_SUBMITTED = "Only a submitted assessment can be signed."
HIGH_RISK_BLOCKS_APPROVAL = "C-SSRS risk is high: the assessment cannot be approved."
OVERRIDE_REASON_REQUIRED = (
    "An absolute contraindication is present: approving needs an override reason."
)
SIGNER_NOT_PSYCHIATRIST = "Only a psychiatrist of the patient's site can sign assessments."
UNDER_AGE = (
    "The patient is {age}; this protocol is for patients {min} or older. A prescriber may open "
    "the course with an override reason."
)
UNDER_AGE_PRESCRIBER_ONLY = "Only a prescriber (psychiatrist of the site) may override the age."


# --- Protocol versions ----------------------------------------------------------------------


def current_version(protocol: Protocol) -> ProtocolVersion:
    version = protocol.versions.published().order_by("-version").first()
    if version is None:
        raise ValidationError(NO_PUBLISHED_VERSION)
    return version


@transaction.atomic
def protocol_version_create(
    *, protocol: Protocol, acting_user: User, rules: dict, change_summary: str
) -> ProtocolVersion:
    Protocol.objects.select_for_update().get(pk=protocol.pk)  # serialize version numbering
    latest = protocol.versions.aggregate(latest=Max("version"))["latest"] or 0
    version = ProtocolVersion(
        protocol=protocol,
        version=latest + 1,
        rules=rules,
        change_summary=change_summary,
        created_by=acting_user,
    )
    version.full_clean()
    attribute(version, acting_user=acting_user, reason="Draft created")
    version.save()
    return version


@transaction.atomic
def protocol_version_update(
    *, version: ProtocolVersion, acting_user: User, rules: dict, change_summary: str
) -> ProtocolVersion:
    version = ProtocolVersion.objects.select_for_update().get(pk=version.pk)
    if version.is_published:
        raise ValidationError(VERSION_PUBLISHED)
    version.rules, version.change_summary = rules, change_summary
    version.full_clean()
    attribute(version, acting_user=acting_user, reason="Draft edited")
    version.save(update_fields=["rules", "change_summary"])
    return version


@transaction.atomic
def protocol_version_publish(*, version: ProtocolVersion, acting_user: User) -> ProtocolVersion:
    version = ProtocolVersion.objects.select_for_update().get(pk=version.pk)
    if version.is_published:
        raise ValidationError(VERSION_PUBLISHED)
    version.full_clean()
    version.published_at = timezone.now()
    version.published_by = acting_user
    attribute(version, acting_user=acting_user, reason="Published")
    version.save(update_fields=["published_at", "published_by"])
    return version


# --- Treatment courses ----------------------------------------------------------------------


def _is_psychiatrist_of(user: User, patient: Patient) -> bool:
    return (
        user.is_active
        and user.has_role(Role.PSYCHIATRIST)
        and patient.home_site_id in user.site_ids
    )


@transaction.atomic
def course_start(
    *,
    patient: Patient,
    protocol: Protocol,
    acting_user: User,
    indication: str,
    responsible_psychiatrist: User,
    planned_sessions: int,
    indication_notes: str = "",
    age_override_reason: str = "",
) -> TreatmentCourse:
    """Open a course pinned to the protocol version in force now (SPEC §G1).

    Below the protocol's minimum age (esketamine: 18, label; SPEC §A4) the course needs an
    override reason, and only a prescriber (psychiatrist of the site) may give it.
    """
    if patient.is_voided:
        raise ValidationError("This registration was voided.")
    if not _is_psychiatrist_of(responsible_psychiatrist, patient):
        raise ValidationError({"responsible_psychiatrist": NOT_A_PSYCHIATRIST})
    version = current_version(protocol)
    age_override_reason = age_override_reason.strip()
    minimum_age = version.parsed.minimum_age_years
    today = timezone.localdate(timezone.now(), patient.home_site.tzinfo)
    under_age = minimum_age is not None and patient.age_on(today) < minimum_age
    if under_age and not age_override_reason:
        raise ValidationError(
            {"age_override_reason": UNDER_AGE.format(age=patient.age_on(today), min=minimum_age)}
        )
    if under_age and not _is_psychiatrist_of(acting_user, patient):
        raise ValidationError({"age_override_reason": UNDER_AGE_PRESCRIBER_ONLY})
    course = TreatmentCourse(
        patient=patient,
        protocol_version=version,
        indication=indication,
        indication_notes=indication_notes,
        responsible_psychiatrist=responsible_psychiatrist,
        planned_sessions=planned_sessions,
        created_by=acting_user,
        age_override_reason=age_override_reason if under_age else "",
        age_override_by=acting_user if under_age else None,
    )
    course.full_clean()
    attribute(course, acting_user=acting_user, reason="Course opened")
    course.save()
    return course


COURSE_TRANSITIONS = {
    TreatmentCourse.Status.ASSESSMENT_PENDING: {"stopped"},
    TreatmentCourse.Status.ACTIVE: {"paused", "completed", "stopped"},
    TreatmentCourse.Status.PAUSED: {"active", "stopped"},
    TreatmentCourse.Status.COMPLETED: set(),
    TreatmentCourse.Status.STOPPED: set(),
}


@transaction.atomic
def course_set_status(
    *, course: TreatmentCourse, acting_user: User, status: str, reason: str
) -> TreatmentCourse:
    course = TreatmentCourse.objects.select_for_update().get(pk=course.pk)
    if status not in COURSE_TRANSITIONS[course.status]:
        raise ValidationError(
            {
                "status": f"A course that is {course.get_status_display().lower()} cannot become "
                f"{TreatmentCourse.Status(status).label.lower()}."
            }
        )
    reason = reason.strip()
    if status in {"paused", "stopped"} and not reason:
        raise ValidationError({"reason": "Give the reason for pausing or stopping the course."})
    course.status, course.status_reason = status, reason
    attribute(course, acting_user=acting_user, reason=f"Status → {status}: {reason}".strip())
    course.save(update_fields=["status", "status_reason"])
    # A completed course's follow-up plan (SPEC §F1) is made by the caller, in the same
    # transaction: followups.services.course_set_status_with_plan. Step 1 knows nothing of Step 3.
    return course


# --- Assessments ----------------------------------------------------------------------------

ASSESSMENT_FIELDS = (
    "diagnosis",
    "psychiatric_history",
    "psychosis_personal",
    "mania_personal",
    "psychosis_mania_family",
    "substance_use",
    "ketamine_pcp_use",
    "alcohol_use",
    "medical_history",
    "current_medications",
    "allergies",
    "benzodiazepines",
    "sedative_hypnotics",
    "psychostimulants",
    "maois",
    "opioids",
    "concomitant_notes",
    "pregnancy",
    "sbp",
    "dbp",
    "hr",
    "rr",
    "spo2",
    "weight_kg",
    "moca_total",
    "madrs_total",
    "phq9_items",
    "gad7_items",
    "cssrs_answers",
    "contraindications",
)
VITAL_FIELDS = ("sbp", "dbp", "hr", "rr", "spo2", "weight_kg")
# The contraindication the pregnancy status answers too (its code in the rules).
PREGNANCY_CODE = "pregnancy"


def _score(assessment: Assessment) -> None:
    """Derive totals, bands, risk and the suicide flag from the item answers."""
    for scale in (instruments.PHQ9, instruments.GAD7):
        items = getattr(assessment, f"{scale.code}_items")
        try:
            result = instruments.score_scale(scale, items) if items else None
        except ValidationError:
            result = None  # incomplete: no total until every item is answered
        setattr(assessment, f"{scale.code}_total", result.total if result else None)
        setattr(assessment, f"{scale.code}_band", result.band if result else "")
    try:
        assessment.cssrs_risk = (
            instruments.cssrs_risk(assessment.cssrs_answers) if assessment.cssrs_answers else ""
        )
    except ValidationError:
        assessment.cssrs_risk = ""
    assessment.suicide_risk_flag = instruments.phq9_self_harm_positive(assessment.phq9_items)
    assessment.gad7_evaluation_flag = instruments.gad7_needs_evaluation(assessment.gad7_total)


def assessment_url(assessment: Assessment) -> str:
    return reverse("protocols:assessment_detail", kwargs={"assessment_id": assessment.pk})


@transaction.atomic
def assessment_create(*, course: TreatmentCourse, acting_user: User) -> Assessment:
    if course.status in {TreatmentCourse.Status.COMPLETED, TreatmentCourse.Status.STOPPED}:
        raise ValidationError("The course is closed; open a new course.")
    assessment = Assessment(course=course, patient=course.patient, created_by=acting_user)
    if course.patient.weight_kg is not None:
        assessment.weight_kg = course.patient.weight_kg
    attribute(assessment, acting_user=acting_user, reason="Draft started")
    assessment.save()
    return assessment


@transaction.atomic
def assessment_update(*, assessment: Assessment, acting_user: User, **fields: Any) -> Assessment:
    """Save a draft. Editing a submitted assessment returns it to draft (submit again)."""
    assessment = Assessment.objects.select_for_update().get(pk=assessment.pk)
    if assessment.status not in {Assessment.Status.DRAFT, Assessment.Status.SUBMITTED}:
        raise ValidationError(ASSESSMENT_NOT_EDITABLE)
    unknown = set(fields) - set(ASSESSMENT_FIELDS)
    if unknown:
        raise TypeError(f"Unknown assessment fields: {sorted(unknown)}")
    rules = assessment.course.protocol_version.parsed
    # Judge the values as they will be saved: a partial update keeps the stored ones.
    merged = {f: fields[f] if f in fields else getattr(assessment, f) for f in VITAL_FIELDS}
    errors = plausibility_errors(rules, merged)
    # A draft may be incomplete, but never contradict the screener's skip logic.
    errors.update(
        {
            f"cssrs_{key}": message
            for key, message in instruments.cssrs_validate(
                fields.get("cssrs_answers") or {}
            ).items()
            if message != instruments.CSSRS_REQUIRED
        }
    )
    if errors:
        raise ValidationError(errors)
    was_flagged = assessment.suicide_risk_flag
    changed = [name for name, value in fields.items() if getattr(assessment, name) != value]
    if not changed:
        return assessment  # nothing to record: no empty history row
    for name in changed:
        setattr(assessment, name, fields[name])
    if "cssrs_answers" in changed:
        # The screen counts from when it was answered (SPEC §G3), not when the draft began.
        assessment.cssrs_administered_at = timezone.now() if assessment.cssrs_answers else None
    _score(assessment)
    reopened = assessment.status == Assessment.Status.SUBMITTED and bool(changed)
    if reopened:
        assessment.status = Assessment.Status.DRAFT
        assessment.submitted_at = None
        assessment.submitted_by = None
    assessment.full_clean()
    attribute(
        assessment,
        acting_user=acting_user,
        reason=("Edited after submission, back to draft: " if reopened else "Draft edited: ")
        + ", ".join(changed),
    )
    assessment.save()
    if assessment.suicide_risk_flag and not was_flagged:
        notify(
            recipient=assessment.course.responsible_psychiatrist,
            kind=Notification.Kind.SUICIDE_RISK,
            title="Suicide-risk flag on a pre-treatment assessment: C-SSRS required",
            url=assessment_url(assessment),
        )
    return assessment


def assessment_missing_items(assessment: Assessment) -> list[str]:
    """Every item that must be present before the assessment can be submitted (§A3)."""
    rules = assessment.course.protocol_version.parsed
    missing = []
    labels = {f.name: str(f.verbose_name) for f in Assessment._meta.fields}
    for name in (
        "diagnosis",
        "psychiatric_history",
        "medical_history",
        "current_medications",
        "allergies",
        "alcohol_use",
        "ketamine_pcp_use",
        "pregnancy",
    ):
        if not getattr(assessment, name):
            missing.append(capfirst(labels[name]))
    for name in (
        "psychosis_personal",
        "mania_personal",
        "psychosis_mania_family",
        "benzodiazepines",
        "sedative_hypnotics",
        "psychostimulants",
        "maois",
        "opioids",
    ):
        if getattr(assessment, name) is None:
            missing.append(capfirst(labels[name]) + ": yes or no")
    for name in VITAL_FIELDS:
        if getattr(assessment, name) is None:
            missing.append(f"Baseline {labels[name]}")
    answers = assessment.contraindications or {}
    for item in rules.contraindications:
        answer = answers.get(item.code) or {}
        if (
            item.code == PREGNANCY_CODE
            and assessment.pregnancy == Assessment.Pregnancy.PREGNANT
            and answer.get("present") is False
        ):
            missing.append(f"Contraindication: {item.label}: the pregnancy status says pregnant")
        if answer.get("present") is None:
            missing.append(f"Contraindication: {item.label}: yes or no")
        elif answer["present"] and not item.is_absolute and not answer.get("note", "").strip():
            missing.append(f"Contraindication: {item.label}: a note acknowledging it")
    required = set(rules.required_instruments)
    if "phq9" in required and assessment.phq9_total is None:
        missing.append("PHQ-9: every item")
    if "gad7" in required and assessment.gad7_total is None:
        missing.append("GAD-7: every item")
    if ("cssrs" in required or assessment.suicide_risk_flag) and not assessment.cssrs_risk:
        missing.append(
            "C-SSRS screener (required: PHQ-9 item 9 is above 0)"
            if assessment.suicide_risk_flag and "cssrs" not in required
            else "C-SSRS screener"
        )
    return missing


@transaction.atomic
def assessment_submit(*, assessment: Assessment, acting_user: User) -> Assessment:
    assessment = Assessment.objects.select_for_update().get(pk=assessment.pk)
    if assessment.status != Assessment.Status.DRAFT:
        raise ValidationError("Only a draft can be submitted.")
    missing = assessment_missing_items(assessment)
    if missing:
        raise ValidationError([ValidationError(item, code="incomplete") for item in missing])
    assessment.status = Assessment.Status.SUBMITTED
    assessment.submitted_at = timezone.now()
    assessment.submitted_by = acting_user
    attribute(assessment, acting_user=acting_user, reason="Submitted for sign-off")
    assessment.save(update_fields=["status", "submitted_at", "submitted_by"])
    notify(
        recipient=assessment.course.responsible_psychiatrist,
        kind=Notification.Kind.ASSESSMENT_SUBMITTED,
        title="A pre-treatment assessment is waiting for your sign-off",
        url=assessment_url(assessment),
    )
    return assessment


def absolute_contraindications_present(assessment: Assessment) -> list[str]:
    rules = assessment.course.protocol_version.parsed
    answers = assessment.contraindications or {}
    pregnant = assessment.pregnancy == Assessment.Pregnancy.PREGNANT
    return [
        c.label
        for c in rules.contraindications
        if c.is_absolute
        and ((answers.get(c.code) or {}).get("present") or (pregnant and c.code == PREGNANCY_CODE))
    ]


def assessment_sign(
    *,
    assessment: Assessment,
    signer: User,
    password: str,
    approve: bool,
    override_reason: str = "",
) -> Assessment:
    """The psychiatrist's sign-off (§A3–A4, §S): approve or decline, with the password."""
    if not signer.has_perm("protocols.sign_assessment") or not _is_psychiatrist_of(
        signer, assessment.patient
    ):
        raise PermissionDenied(SIGNER_NOT_PSYCHIATRIST)
    signatures.check_password_for_signing(signer=signer, password=password, record=assessment)
    with transaction.atomic():
        return _assessment_sign(
            assessment=assessment,
            signer=signer,
            approve=approve,
            override_reason=override_reason.strip(),
        )


def _assessment_sign(
    *, assessment: Assessment, signer: User, approve: bool, override_reason: str
) -> Assessment:
    assessment = Assessment.objects.select_for_update().get(pk=assessment.pk)
    if assessment.status != Assessment.Status.SUBMITTED:
        raise ValidationError(ASSESSMENT_NOT_SUBMITTED)
    if approve:
        if assessment.cssrs_risk == instruments.CssrsRisk.HIGH:
            raise ValidationError(HIGH_RISK_BLOCKS_APPROVAL)
        if absolute_contraindications_present(assessment) and not override_reason:
            raise ValidationError({"override_reason": OVERRIDE_REASON_REQUIRED})
    assessment.override_reason = override_reason
    meaning = Signature.Meaning.APPROVED if approve else Signature.Meaning.DECLINED
    signature = signatures.record_signature(record=assessment, signer=signer, meaning=meaning)
    assessment.status = Assessment.Status.APPROVED if approve else Assessment.Status.NOT_APPROVED
    assessment.signed_at = signature.signed_at
    assessment.locked_at = signature.signed_at
    attribute(assessment, acting_user=signer, reason=f"Signed: {meaning}")
    assessment.save(update_fields=["override_reason", "status", "signed_at", "locked_at"])
    # The "waiting for your sign-off" notice is done with.
    Notification.objects.filter(
        recipient=signer, url=assessment_url(assessment), read_at__isnull=True
    ).update(read_at=signature.signed_at)
    course = assessment.course
    if approve and course.status == TreatmentCourse.Status.ASSESSMENT_PENDING:
        course.status = TreatmentCourse.Status.ACTIVE
        attribute(course, acting_user=signer, reason="Assessment approved")
        course.save(update_fields=["status"])
    return assessment
