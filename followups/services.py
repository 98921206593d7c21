"""Writes for Step 3: follow-up plans (§F1), completion (§F2), reminders and the sweep (§F4–F7).

Reminders are rows. `sweep_due_reminders()` is the only sender: beat runs it every minute
(followups.tasks), `manage.py send_due_reminders` runs it once. Web requests never wait on the
broker: they only write rows, and at most nudge the worker after commit, best effort.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import F, Min, Q
from django.urls import reverse
from django.utils import timezone

from clinic import signatures
from clinic.models import Notification, Role, Signature, User
from clinic.services import attribute
from followups.models import REMS_FORM_CODE, FollowUp, Reminder
from followups.permissions import check_may_close, check_may_complete
from protocols import instruments
from protocols import services as protocol_services
from protocols.models import TreatmentCourse
from protocols.plausibility import NOT_A_WHOLE_NUMBER, plausibility_errors, whole_number
from protocols.rules import FollowUpRule, ProtocolRules

logger = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)
MAX_ATTEMPTS = 5


def _followup_url(followup: FollowUp) -> str:
    return reverse("followups:complete", kwargs={"followup_id": followup.pk})


def _staff_with_role(site, role: str):
    return User.objects.filter(
        is_active=True, is_service_account=False, sites=site, groups__name=role
    ).distinct()


# --- Plans (SPEC §F1, §F1a, §D) ------------------------------------------------------------------
#
# Cadence, not postponement. A plan is made at each discharge (and when a course completes) and
# never cancels or moves a follow-up already planned:
#
# - rules anchored at the course start (`anchor: course_start`, e.g. the esketamine PHQ-9/GAD-7
#   every 2 weeks in induction and the end-of-induction review at week 4) are planned once per
#   course, by the first plan that meets them; a later discharge plans none of them again;
# - rules owed for every session (`per_session`: the next-day call, the REMS form) are planned
#   for each discharge, whatever earlier ones are still open (an overdue call stays overdue);
# - any other rule counted from the discharge (the 7-day and 28-day reviews, the GP check) is
#   planned only when no follow-up of that rule is open for the course: an open one is kept as
#   it is, neither cancelled nor moved later, and a new one is planned only once it is closed.


def course_start_at(course: TreatmentCourse) -> datetime:
    """When the course started, for follow-ups counted from it (SPEC §F1a, §D).

    The dose start of the course's first dosed session: the first dose is when treatment, and
    so its cadence, began (an aborted session counts if it was dosed). Before any dose
    (imported courses, demo data) the course's creation time stands in.
    """
    first = course.sessions.filter(dose_started_at__isnull=False).aggregate(
        first=Min("dose_started_at")
    )["first"]
    return first or course.created_at


def _occurrences(rule: FollowUpRule, start: datetime) -> list[tuple[str, str, datetime]]:
    first = start + timedelta(hours=rule.offset_hours)
    if not rule.repeat_every_days:
        return [(rule.code, rule.label, first)]
    return [
        (
            f"{rule.code}-{n}",
            f"{rule.label} ({n})",
            first + timedelta(days=rule.repeat_every_days * (n - 1)),
        )
        for n in range(1, rule.repeat_count + 1)
    ]


def _window_ends_at(
    rules: ProtocolRules, rule: FollowUpRule, start: datetime, due_at: datetime
) -> datetime:
    if rule.code == REMS_FORM_CODE:
        # SPEC §F6: the REMS monitoring form is due within N days of each esketamine session
        # (a window never ends before its due time, whatever the offset).
        return max(start + timedelta(days=rules.rems_form_due_days), due_at)
    return due_at + timedelta(hours=rule.window_hours)


@transaction.atomic
def _create_followups(
    *,
    rules: ProtocolRules,
    course: TreatmentCourse,
    start: datetime,
    session=None,
    on_completion: bool,
    acting_user: User,
) -> list[FollowUp]:
    # What is planned depends on what is there: plans of one course never interleave.
    list(TreatmentCourse.objects.select_for_update(no_key=True).filter(pk=course.pk).values("pk"))
    created = []
    patient = course.patient
    course_start: datetime | None = None
    for rule in rules.followups:
        if rule.on_course_completion != on_completion:
            continue
        if rule.anchor == FollowUp.Anchor.COURSE_START:
            if course_start is None:
                course_start = course_start_at(course)
            anchor, rule_start = FollowUp.Anchor.COURSE_START, course_start
        else:
            anchor = (
                FollowUp.Anchor.COURSE_COMPLETION if on_completion else FollowUp.Anchor.DISCHARGE
            )
            rule_start = start
        # Add hours in real time, not wall-clock time (DST).
        rule_start = rule_start.astimezone(UTC)
        occurrences = _occurrences(rule, rule_start)
        planned = FollowUp.objects.filter(course=course, code__in=[c for c, _, _ in occurrences])
        if anchor == FollowUp.Anchor.COURSE_START:
            if planned.exists():
                continue  # once per course: its cadence was set by the first plan
        elif not rule.per_session and planned.filter(state=FollowUp.State.OPEN).exists():
            continue  # the open one is kept as it is: never superseded, never moved later
        for code, label, due_at in occurrences:
            followup = FollowUp(
                site=patient.home_site,
                patient=patient,
                course=course,
                session=session,
                code=code,
                label=label,
                anchor=anchor,
                due_at=due_at,
                window_ends_at=_window_ends_at(rules, rule, rule_start, due_at),
                assigned_role=rule.role,
                assigned_to=course.responsible_psychiatrist
                if rule.role == Role.PSYCHIATRIST
                else None,
                instruments=list(rule.instruments),
                requires_bp_in_person=rule.requires_bp_in_person,
                signed_by_psychiatrist=rule.signed_by_psychiatrist,
                escalation=list(rules.escalation),
            )
            followup.full_clean()
            attribute(followup, acting_user=acting_user, reason="Planned from the protocol")
            followup.save()
            _plan_reminders(followup)
            created.append(followup)
    return created


def plan_after_discharge(*, session, acting_user: User) -> list[FollowUp]:
    """SPEC §F1: the follow-up plan of the session's protocol version, from discharge."""
    return _create_followups(
        rules=session.rules,
        course=session.course,
        start=session.discharged_at,
        session=session,
        on_completion=False,
        acting_user=acting_user,
    )


def plan_from(*, course: TreatmentCourse, start: datetime, acting_user: User) -> list[FollowUp]:
    """The discharge plan of the course's version from `start` (imports and demo data)."""
    return _create_followups(
        rules=course.protocol_version.parsed,
        course=course,
        start=start,
        on_completion=False,
        acting_user=acting_user,
    )


def plan_on_course_completion(*, course: TreatmentCourse, acting_user: User) -> list[FollowUp]:
    return _create_followups(
        rules=course.protocol_version.parsed,
        course=course,
        start=timezone.now(),
        on_completion=True,
        acting_user=acting_user,
    )


@transaction.atomic
def course_set_status_with_plan(
    *, course: TreatmentCourse, acting_user: User, status: str, reason: str
) -> TreatmentCourse:
    """Change a course's status (Step 1's `course_set_status`); completing it also plans the
    follow-ups its protocol version keeps for completion (SPEC §F1), in the same transaction.

    Step 1 does not import Step 3: the caller of a completion plans its follow-ups, here.
    """
    course = protocol_services.course_set_status(
        course=course, acting_user=acting_user, status=status, reason=reason
    )
    if course.status == TreatmentCourse.Status.COMPLETED:
        plan_on_course_completion(course=course, acting_user=acting_user)
    return course


def _recipients(followup: FollowUp) -> list[User]:
    if followup.assigned_to_id:
        return [followup.assigned_to]
    return list(_staff_with_role(followup.site, followup.assigned_role))


def _reminder(
    *, key: str, followup: FollowUp | None, recipient: User, due_at: datetime, title: str, url: str
) -> None:
    """One row per channel; the idempotency key makes a second plan of the same thing a no-op."""
    channels = [Reminder.Channel.IN_APP]
    if recipient.email:
        channels.append(Reminder.Channel.EMAIL)
    for channel in channels:
        Reminder.objects.get_or_create(
            idempotency_key=f"{key}:{recipient.pk}:{channel}",
            defaults={
                "followup": followup,
                "recipient": recipient,
                "channel": channel,
                "due_at": due_at,
                "title": title,
                "url": url,
            },
        )


def _plan_reminders(followup: FollowUp) -> None:
    url = _followup_url(followup)
    for user in _recipients(followup):
        _reminder(
            key=f"followup:{followup.pk}:due",
            followup=followup,
            recipient=user,
            due_at=followup.due_at,
            title=f"Follow-up due: {followup.label}",
            url=url,
        )
    # Escalation ladder (SPEC §F5), from the protocol version: overdue by N hours → role.
    for step in followup.escalation:
        at = followup.window_ends_at + timedelta(hours=step["overdue_hours"])
        if step["role"] == Role.PSYCHIATRIST and followup.course_id:
            people = [followup.course.responsible_psychiatrist]
        else:
            people = list(_staff_with_role(followup.site, step["role"]))
        for user in people:
            _reminder(
                key=f"followup:{followup.pk}:escalate:{step['overdue_hours']}h",
                followup=followup,
                recipient=user,
                due_at=at,
                title=f"Overdue by {step['overdue_hours']} h: {followup.label}",
                url=url,
            )


def _cancel_reminders(followup: FollowUp) -> int:
    return Reminder.objects.filter(
        followup=followup, state__in=[Reminder.State.PENDING, Reminder.State.SENDING]
    ).update(state=Reminder.State.CANCELLED)


# --- Completion ------------------------------------------------------------------------------

FOLLOWUP_CLOSED = "This follow-up is already closed."


def _check_open(followup: FollowUp) -> FollowUp:
    # of=self: PostgreSQL cannot lock the nullable side of the outer join to the course.
    followup = (
        FollowUp.objects.select_for_update(of=("self",))
        .select_related("course")
        .get(pk=followup.pk)
    )
    if followup.state != FollowUp.State.OPEN:
        raise ValidationError(FOLLOWUP_CLOSED)
    return followup


def followup_cancel(*, followup: FollowUp, acting_user: User, reason: str) -> FollowUp:
    with transaction.atomic():
        followup = _check_open(followup)
        if not reason.strip():
            raise ValidationError({"reason": "Give the reason."})
        followup.state, followup.state_reason = FollowUp.State.CANCELLED, reason.strip()
        attribute(followup, acting_user=acting_user, reason=f"Cancelled: {reason.strip()}")
        followup.save(update_fields=["state", "state_reason"])
        _cancel_reminders(followup)
        return followup


def followup_mark_missed(*, followup: FollowUp, acting_user: User, reason: str) -> FollowUp:
    """Close a follow-up that could not be done, with the reason (SPEC §F1); its reminders
    stop. Who may: followups.permissions.closing_refusal."""
    check_may_close(acting_user, followup)
    with transaction.atomic():
        followup = _check_open(followup)
        if not reason.strip():
            raise ValidationError({"reason": "Give the reason the follow-up was missed."})
        followup.state, followup.state_reason = FollowUp.State.MISSED, reason.strip()
        attribute(followup, acting_user=acting_user, reason=f"Missed: {reason.strip()}")
        followup.save(update_fields=["state", "state_reason"])
        _cancel_reminders(followup)
        return followup


UNKNOWN_CONTACT_METHOD = "Choose one of the contact methods."
NO_BP_FOR_A_DUTY = "This duty records no blood pressure."
BP_REQUIRED_IN_PERSON = "Record the blood pressure at an in-person physical check."
BP_FIELDS = ("sbp", "dbp")


def _value_errors(followup: FollowUp, fields: dict) -> dict[str, str]:
    """Field errors for values a form would refuse; normalizes `fields` in place (SPEC §N5)."""
    errors: dict[str, str] = {}
    contact = fields.get("contact_method")
    if contact and contact not in FollowUp.ContactMethod.values:
        errors["contact_method"] = UNKNOWN_CONTACT_METHOD
    given = {name: fields.get(name) for name in BP_FIELDS if fields.get(name) is not None}
    for name, value in given.items():
        number = whole_number(value)
        if number is None:
            errors[name] = NOT_A_WHOLE_NUMBER
        else:
            fields[name] = number
    if given and not followup.course_id:
        errors.update(dict.fromkeys(given, NO_BP_FOR_A_DUTY))
    elif given and not errors.keys() & set(BP_FIELDS):
        # The course's protocol version sets the plausible range (SPEC §M4), as in the form.
        errors.update(
            plausibility_errors(
                followup.course.protocol_version.parsed,
                {name: fields.get(name) for name in BP_FIELDS},
            )
        )
    return errors


COMPLETION_FIELDS = (
    "contact_method",
    "phq9_items",
    "gad7_items",
    "cssrs_answers",
    "side_effects",
    "sbp",
    "dbp",
    "general_health",
    "outcome",
    "next_action",
)


def scales_due(followup: FollowUp, *, at: datetime | None = None) -> list[str]:
    """PHQ-9 / GAD-7 ask about the last 2 weeks: not again within 14 days (SPEC §F2).

    "A score exactly 14 days old no longer counts as recent": a score is recent only while it
    is younger than the recall period, counted in elapsed time (24-hour days, right across
    daylight saving, SPEC §N4). At exactly 14 days the scale is due again.
    """
    at = at or timezone.now()
    due = [code for code in followup.instruments if code in ("phq9", "gad7")]
    if not due or followup.patient_id is None:
        return due
    since = at - timedelta(days=instruments.SCALE_RECALL_DAYS)
    recent = FollowUp.objects.filter(
        patient_id=followup.patient_id, state=FollowUp.State.COMPLETED, completed_at__gt=since
    )
    return [code for code in due if not recent.filter(**{f"{code}_total__isnull": False}).exists()]


def followup_complete(
    *, followup: FollowUp, acting_user: User, password: str | None = None, **fields
) -> FollowUp:
    """Record the follow-up (SPEC §F2); psychiatric reviews are signed with the password.

    Who may: followups.permissions.completion_refusal (the view and the page ask the same).
    Values are validated as the form does (SPEC §N5): a blood pressure that is not a whole
    number is refused with a field error, never truncated.
    """
    check_may_complete(acting_user, followup)
    if followup.signed_by_psychiatrist:
        signatures.check_password_for_signing(
            signer=acting_user, password=password or "", record=followup
        )
    with transaction.atomic():
        followup = _check_open(followup)
        errors = _value_errors(followup, fields)
        if acting_user.has_role(Role.GP) and not acting_user.has_role(Role.PSYCHIATRIST):
            # GPs record physical status only (SPEC §U): no psychiatric scales.
            for name in ("phq9_items", "gad7_items", "cssrs_answers"):
                if fields.get(name):
                    errors[name] = "GPs record physical status only."
        if not fields.get("contact_method") and followup.assigned_role != Role.ADMINISTRATOR:
            errors["contact_method"] = "How was the patient contacted?"
        if not (fields.get("outcome") or "").strip():
            errors["outcome"] = "Summarize the outcome."
        due = scales_due(followup)
        for code, scale in (("phq9", instruments.PHQ9), ("gad7", instruments.GAD7)):
            items = fields.get(f"{code}_items")
            if code in due and not items:
                errors[f"{code}_items"] = f"{scale.name} is due at this follow-up."
            if items:
                try:
                    result = instruments.score_scale(scale, items)
                except ValidationError as error:
                    errors[f"{code}_items"] = " ".join(error.messages)
                else:
                    setattr(followup, f"{code}_total", result.total)
                    setattr(followup, f"{code}_band", result.band)
        answers = fields.get("cssrs_answers")
        if answers:
            problems = instruments.cssrs_validate(answers)
            if problems:
                errors.update({f"cssrs_{k}": v for k, v in problems.items()})
            else:
                followup.cssrs_risk = instruments.cssrs_risk(answers)
        if (
            fields.get("contact_method") == FollowUp.ContactMethod.IN_PERSON
            and followup.requires_bp_in_person
            and (fields.get("sbp") is None or fields.get("dbp") is None)
        ):
            errors.setdefault("sbp", BP_REQUIRED_IN_PERSON)
        if errors:
            raise ValidationError(errors)
        for name in COMPLETION_FIELDS:
            setattr(followup, name, fields.get(name, getattr(followup, name)))
        now = timezone.now()
        followup.state = FollowUp.State.COMPLETED
        followup.completed_at, followup.completed_by = now, acting_user
        followup.risk_flagged = instruments.phq9_self_harm_positive(followup.phq9_items) or (
            followup.cssrs_risk in (instruments.CssrsRisk.MODERATE, instruments.CssrsRisk.HIGH)
        )
        # SPEC §F2: GAD-7 >= 10 carries a "further evaluation" flag, stored with the score.
        followup.gad7_evaluation_flag = instruments.gad7_needs_evaluation(followup.gad7_total)
        followup.full_clean()
        reason = "Completed"
        if followup.signed_by_psychiatrist:
            # Signed over the completed content, then saved once, completed and locked: one
            # history row for one completion (locked_at is not part of the signed content).
            signature = signatures.record_signature(
                record=followup, signer=acting_user, meaning=Signature.Meaning.REVIEWED
            )
            followup.locked_at = signature.signed_at
            reason = "Completed; review signed and locked"
        attribute(followup, acting_user=acting_user, reason=reason)
        followup.save()
        _cancel_reminders(followup)
        if followup.risk_flagged:
            _alert_psychiatrist(followup)
        return followup


def _alert_psychiatrist(followup: FollowUp) -> None:
    """Risk answers alert the psychiatrist at once (SPEC §F2): in-app now, e-mail by the sweep."""
    psychiatrist = followup.course.responsible_psychiatrist if followup.course_id else None
    if psychiatrist is None:
        return
    title = "Risk answer at a follow-up: review the patient today"
    url = _followup_url(followup)
    Notification.objects.create(
        recipient=psychiatrist, kind=Notification.Kind.FOLLOWUP_RISK, title=title, url=url
    )
    if psychiatrist.email:
        Reminder.objects.get_or_create(
            idempotency_key=f"followup:{followup.pk}:risk:{psychiatrist.pk}:email",
            defaults={
                "followup": None,
                "recipient": psychiatrist,
                "channel": Reminder.Channel.EMAIL,
                "due_at": timezone.now(),
                "title": title,
                "url": url,
            },
        )
        nudge_sweep()


# --- The sweep (SPEC §F4–F7) -----------------------------------------------------------------


def nudge_sweep() -> None:
    """After commit, ask the worker to sweep now. Best effort: beat sweeps every minute anyway,
    and a broker outage must never fail or slow the request (SPEC §F7)."""

    def send() -> None:
        from clinic.celery import app
        from followups.tasks import sweep_reminders

        try:
            # One quick connection attempt, no retries: kombu's default retry sleeps seconds.
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=0)
                sweep_reminders.apply_async(connection=conn, retry=False, ignore_result=True)
        except Exception:  # any broker error: the rows are safe, the next beat sweep sends them
            logger.warning("reminder sweep not enqueued: broker unavailable")

    transaction.on_commit(send)


def in_quiet_hours(site, at: datetime) -> bool:
    start, end = site.quiet_hours_start, site.quiet_hours_end
    if start is None or end is None:
        return False
    local = timezone.localtime(at, site.tzinfo).time()
    return start <= local < end if start < end else (local >= start or local < end)


def _claim(now: datetime, limit: int, worker: str) -> list[int]:
    """Claim due rows: pending ones, and sending ones whose lease expired (a crashed sweep)."""
    due = Q(state=Reminder.State.PENDING, due_at__lte=now) | Q(
        state=Reminder.State.SENDING, lease_expires_at__lt=now
    )
    claimed = []
    with transaction.atomic():
        rows = Reminder.objects.filter(due).order_by("due_at", "id")
        if connection.vendor == "postgresql":
            rows = rows.select_for_update(skip_locked=True)
        for pk in rows.values_list("pk", flat=True)[:limit]:
            # The conditional update is the claim on SQLite and a second guard on PostgreSQL.
            won = (
                Reminder.objects.filter(pk=pk)
                .filter(due)
                .update(
                    state=Reminder.State.SENDING,
                    lease_expires_at=now + LEASE,
                    claimed_by=worker,
                )
            )
            if won:
                claimed.append(pk)
    if claimed:
        Reminder.objects.filter(pk__in=claimed).update(attempts=F("attempts") + 1)
    return claimed


def _deliver(reminder: Reminder) -> None:
    if reminder.channel == Reminder.Channel.IN_APP:
        Notification.objects.create(
            recipient=reminder.recipient,
            kind=Notification.Kind.FOLLOWUP_REMINDER,
            title=reminder.title,
            url=reminder.url,
        )
    else:
        send_mail(
            subject=f"Vigil: {reminder.title}",
            message=f"{reminder.title}\n\nOpen Vigil to act on it: "
            f"{settings.VIGIL_BASE_URL}{reminder.url}\n",
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[reminder.recipient.email],
        )


def sweep_due_reminders(*, now: datetime | None = None, limit: int = 500) -> dict[str, int]:
    """Send every due reminder once. Safe to run concurrently and after a crash."""
    now = now or timezone.now()
    worker = uuid.uuid4().hex
    counts = {"sent": 0, "cancelled": 0, "deferred": 0, "failed": 0}
    for pk in _claim(now, limit, worker):
        with transaction.atomic():
            reminder = (
                Reminder.objects.select_for_update(of=("self",))
                .select_related("recipient", "followup__site")
                .get(pk=pk)
            )
            if reminder.state != Reminder.State.SENDING or reminder.claimed_by != worker:
                continue  # another sweep took it over after our lease expired
            followup = reminder.followup
            if followup is not None and followup.state != FollowUp.State.OPEN:
                reminder.state = Reminder.State.CANCELLED
                reminder.save(update_fields=["state"])
                counts["cancelled"] += 1
                continue
            site = followup.site if followup else None
            if site is not None and in_quiet_hours(site, now):
                reminder.state, reminder.lease_expires_at = Reminder.State.PENDING, None
                reminder.due_at = _quiet_hours_end(site, now)
                reminder.save(update_fields=["state", "lease_expires_at", "due_at"])
                counts["deferred"] += 1
                continue
            try:
                _deliver(reminder)
            except Exception as error:  # the mail server is the outside world
                reminder.last_error = str(error)[:300]
                reminder.state = (
                    Reminder.State.FAILED
                    if reminder.attempts >= MAX_ATTEMPTS
                    else Reminder.State.PENDING
                )
                reminder.due_at = now + timedelta(minutes=5 * reminder.attempts)
                reminder.save(update_fields=["last_error", "state", "due_at"])
                counts["failed"] += 1
                continue
            reminder.state, reminder.sent_at = Reminder.State.SENT, timezone.now()
            reminder.save(update_fields=["state", "sent_at"])
            counts["sent"] += 1
    return counts


def _quiet_hours_end(site, now: datetime) -> datetime:
    local = timezone.localtime(now, site.tzinfo)
    end = local.replace(
        hour=site.quiet_hours_end.hour, minute=site.quiet_hours_end.minute, second=0, microsecond=0
    )
    if end <= local:
        end += timedelta(days=1)
    return end


# --- Site duties (SPEC §F6) ------------------------------------------------------------------

CS_INVENTORY = "cs-inventory"


def ensure_site_duties(*, now: datetime | None = None) -> int:
    """Keep one open controlled-substance inventory duty per active site, due every
    VIGIL_CS_INVENTORY_INTERVAL_DAYS after the last one was done. Idempotent: run daily."""
    from clinic.models import Site
    from clinic.services import service_account

    now = now or timezone.now()
    interval = timedelta(days=settings.VIGIL_CS_INVENTORY_INTERVAL_DAYS)
    created = 0
    for site in Site.objects.filter(is_active=True):
        duties = FollowUp.objects.filter(site=site, code=CS_INVENTORY)
        if duties.filter(state=FollowUp.State.OPEN).exists():
            continue
        last = duties.filter(state=FollowUp.State.COMPLETED).order_by("-completed_at").first()
        due_at = last.completed_at + interval if last else now
        with transaction.atomic():
            duty = FollowUp(
                site=site,
                code=CS_INVENTORY,
                label="Controlled-substance inventory (biennial)",
                due_at=due_at,
                window_ends_at=due_at + timedelta(days=7),
                assigned_role=Role.ADMINISTRATOR,
            )
            duty.full_clean()
            attribute(duty, acting_user=service_account(), reason="Scheduled site duty")
            duty.save()
            _plan_reminders(duty)
        created += 1
    return created
