"""The compliance dashboard's figures (SPEC §C5), computed by the database.

Each figure is one definition in `FIGURES`: the population of records it judges (site- and
range-filtered), the condition a record meets to be compliant, and the reason a record is not.
The dashboard counts it (`figure_totals`, `figure_trend`), the drill-down list pages through it
(`figure_rows`) and the CSV export streams it, all from that one definition.

Clinical numbers (approval validity, observation minutes, discharge criteria, follow-up windows,
the REMS form's window) come from each record's own protocol version: the versions are loaded
once (a few rows, whatever the number of sessions) and turned into per-version SQL conditions.
Nothing here loops over clinical rows in Python.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from functools import cache, reduce
from operator import and_, or_
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    DateTimeField,
    DurationField,
    Exists,
    Expression,
    ExpressionWrapper,
    F,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Concat, Length, TruncDate, TruncWeek
from django.urls import reverse
from django.utils import timezone

from audit.models import Finding, VerificationRun
from clinic.models import Signature, Site
from followups.models import REMS_FORM_CODE, FollowUp
from monitoring.models import (
    Alert,
    DrugLot,
    Incident,
    RequiredCheck,
    TreatmentSession,
    VitalReading,
)
from patients.models import ConsentKind, ConsentRecord, ConsentTemplate
from protocols.models import Assessment, ProtocolVersion
from protocols.rules import FollowUpRule, ProtocolRules

# --- The scope: one site, a range of its calendar days ----------------------------------------


@dataclass(frozen=True)
class Scope:
    site: Site
    start: date
    end: date  # inclusive
    now: datetime

    @property
    def tz(self) -> ZoneInfo:
        return self.site.tzinfo

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time.min, self.tz)

    @property
    def end_at(self) -> datetime:
        """The first instant after the range: midnight after `end`, site time."""
        return datetime.combine(self.end + timedelta(days=1), time.min, self.tz)

    def in_range(self, field: str) -> Q:
        return Q(**{f"{field}__gte": self.start_at, f"{field}__lt": self.end_at})


# --- The rules of every protocol version, loaded once -----------------------------------------


@dataclass(frozen=True)
class VersionRules:
    pk: int
    name: str
    rules: ProtocolRules | None  # None: the stored rules do not parse


@dataclass(frozen=True)
class RuleBook:
    versions: tuple[VersionRules, ...]
    zones: tuple[str, ...]  # the sites' time zones, for consent expiry on the home calendar

    @property
    def readable(self) -> tuple[VersionRules, ...]:
        return tuple(v for v in self.versions if v.rules is not None)

    def where(self, test: Callable[[ProtocolRules], bool]) -> tuple[VersionRules, ...]:
        return tuple(v for v in self.readable if test(v.rules))


def load_rule_book() -> RuleBook:
    """Two small queries: protocol versions (authored by administrators) and site time zones."""
    versions = []
    for version in ProtocolVersion.objects.select_related("protocol").order_by("pk"):
        try:
            rules = version.parsed
        except ValidationError:
            rules = None
        versions.append(VersionRules(version.pk, str(version), rules))
    zones = tuple(Site.objects.order_by("time_zone").values_list("time_zone", flat=True).distinct())
    return RuleBook(tuple(versions), zones)


def _any(conditions, empty: Q) -> Q:
    conditions = list(conditions)
    return reduce(or_, conditions) if conditions else empty


def _all(conditions) -> Q:
    conditions = list(conditions)
    return reduce(and_, conditions) if conditions else Q()


# pk is never NULL: these are "always false" / "always true" without an empty IN list.
NEVER = Q(pk__isnull=True)
ALWAYS = Q(pk__isnull=False)
UNREADABLE_RULES = "The protocol version's rules cannot be read"


def _reason(*whens: When, default: str = "") -> Expression:
    return Case(*whens, default=Value(default), output_field=CharField())


def _version(path: str, version: VersionRules) -> Q:
    return Q(**{path: version.pk})


def _unreadable(book: RuleBook) -> When:
    return When(
        ~Q(course__protocol_version__in=[v.pk for v in book.readable]),
        then=Value(UNREADABLE_RULES),
    )


# --- What a drill-down row shows ----------------------------------------------------------------


@dataclass(frozen=True)
class RowView:
    record: str  # what the row is, e.g. "Session" or "Check: BP at 40 min"
    record_id: int
    when: datetime
    patient_mrn: str
    detail: str
    ok: bool
    reason: str
    url: str  # the record's page ("" when it has none)
    audit_type: str  # model label for audit:record ("" when there is no trail)
    audit_id: int | None


def _session_url(session_id: int, anchor: str = "") -> str:
    return reverse("monitoring:session", kwargs={"session_id": session_id}) + anchor


def _mrn(patient) -> str:
    return patient.mrn if patient is not None else ""


# --- Figures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    slug: str
    title: str
    step: str  # a key of STEPS
    # rate: compliant of the population; problems: how many of the population fail;
    # tally: every row is a problem (there is no meaningful denominator).
    kind: str
    population: Callable[[Scope, RuleBook], QuerySet]  # annotated with `when`
    compliant: Callable[[Scope, RuleBook], Q]
    reason: Callable[[Scope, RuleBook], Expression]
    describe: Callable[[object], RowView]
    definition: Callable[[RuleBook], str]
    related: tuple[str, ...] = ()
    trend: bool = True

    @property
    def counts_violations(self) -> bool:
        return self.kind != "rate"


STEPS = {
    "1": "Step 1 · Pre-treatment assessment",
    "2": "Step 2 · Monitoring during treatment",
    "3": "Step 3 · Follow-up",
    "x": "Across the steps",
}


# Step 1: the first dosed session of each course had an approval signed before dosing --------

_ASSESSMENT_SIGNATURES = Signature.objects.filter(
    content_type__app_label="protocols", content_type__model="assessment"
)


def _patient_assessments() -> QuerySet:
    # Two levels up: the signature subquery sits inside the session's annotation.
    return Assessment.objects.filter(patient=OuterRef(OuterRef("patient"))).values("pk")


def _first_sessions(scope: Scope, book: RuleBook) -> QuerySet:
    earlier = TreatmentSession.objects.filter(
        course=OuterRef("course"), dose_started_at__isnull=False
    ).filter(
        Q(dose_started_at__lt=OuterRef("dose_started_at"))
        | Q(dose_started_at=OuterRef("dose_started_at"), pk__lt=OuterRef("pk"))
    )
    approvals = _ASSESSMENT_SIGNATURES.filter(
        meaning=Signature.Meaning.APPROVED,
        object_id__in=Assessment.objects.filter(
            patient=OuterRef(OuterRef("patient")), status=Assessment.Status.APPROVED
        ).values("pk"),
    )
    return (
        TreatmentSession.objects.filter(scope.in_range("dose_started_at"), site=scope.site)
        .filter(~Exists(earlier))
        .annotate(
            when=F("dose_started_at"),
            approval_at=Subquery(
                approvals.filter(signed_at__lte=OuterRef("dose_started_at"))
                .order_by("-signed_at", "-id")
                .values("signed_at")[:1]
            ),
            approved_later=Exists(approvals.filter(signed_at__gt=OuterRef("dose_started_at"))),
        )
        .annotate(
            declined_since=Exists(
                _ASSESSMENT_SIGNATURES.filter(
                    meaning=Signature.Meaning.DECLINED,
                    object_id__in=_patient_assessments(),
                    signed_at__gt=OuterRef("approval_at"),
                    signed_at__lte=OuterRef("dose_started_at"),
                )
            ),
        )
        .select_related("patient", "course__protocol_version__protocol")
    )


def _approval_current(version: VersionRules, *, current: bool = True) -> Q:
    days = timedelta(days=version.rules.assessment_validity_days)
    lookup = "approval_at__gte" if current else "approval_at__lt"
    return _version("course__protocol_version", version) & Q(
        **{lookup: F("dose_started_at") - days}
    )


def _step1_compliant(scope: Scope, book: RuleBook) -> Q:
    current = _any((_approval_current(v) for v in book.readable), NEVER)
    return Q(approval_at__isnull=False, declined_since=False) & current


def _step1_reason(scope: Scope, book: RuleBook) -> Expression:
    return _reason(
        When(
            approval_at__isnull=True,
            approved_later=True,
            then=Value("Approval signed only after dosing started"),
        ),
        When(approval_at__isnull=True, then=Value("No approved assessment before dosing")),
        When(declined_since=True, then=Value("A later assessment was declined before dosing")),
        *(
            When(
                _approval_current(v, current=False),
                then=Value(f"Approval older than {v.rules.assessment_validity_days} days"),
            )
            for v in book.readable
        ),
        _unreadable(book),
    )


def _describe_session(session) -> RowView:
    return RowView(
        record="Session",
        record_id=session.pk,
        when=session.when,
        patient_mrn=_mrn(session.patient),
        detail=str(session.course.protocol_version),
        ok=session.ok,
        reason=session.reason,
        url=_session_url(session.pk),
        audit_type="monitoring.treatmentsession",
        audit_id=session.pk,
    )


def _step1_definition(book: RuleBook) -> str:
    days = sorted({v.rules.assessment_validity_days for v in book.readable})
    return (
        "The first dosed session of each treatment course whose dosing started in the range. "
        "Compliant: the patient's latest approval signature before the dose start was signed "
        f"within {' / '.join(map(str, days)) or '—'} days (the protocol version's assessment "
        "validity) and no assessment was declined between that approval and the dose."
    )


# Step 2: valid consent at dosing ----------------------------------------------------------


def _consent_kinds(book: RuleBook) -> list[str]:
    return sorted({kind for v in book.readable for kind in v.rules.consent_kinds})


def _kind_key(kind: str) -> str:
    return kind.replace("-", "_")


def _dosed_sessions(scope: Scope, book: RuleBook) -> QuerySet:
    # The patient's home-site calendar decides expiry (patients.selectors.consent_status).
    dose_day = Case(
        *(
            When(
                patient__home_site__time_zone=zone,
                then=TruncDate("dose_started_at", tzinfo=ZoneInfo(zone)),
            )
            for zone in book.zones
        ),
        default=TruncDate("dose_started_at", tzinfo=scope.tz),
    )
    sessions = TreatmentSession.objects.filter(
        scope.in_range("dose_started_at"), site=scope.site
    ).annotate(when=F("dose_started_at"), dose_day=dose_day)
    for kind in _consent_kinds(book):
        key = _kind_key(kind)
        latest = ConsentRecord.objects.filter(
            patient=OuterRef("patient"),
            template__kind=kind,
            signed_at__lte=OuterRef("dose_started_at"),
        ).order_by("-signed_at", "-id")
        sessions = sessions.annotate(
            **{
                f"{key}_id": Subquery(latest.values("pk")[:1]),
                f"{key}_withdrawn_at": Subquery(latest.values("withdrawn_at")[:1]),
                f"{key}_version": Subquery(latest.values("template__version")[:1]),
                f"{key}_valid_until": Subquery(latest.values("valid_until")[:1]),
            }
        ).annotate(
            **{
                f"{key}_superseded": Exists(
                    ConsentTemplate.objects.filter(
                        kind=kind,
                        requires_reconsent=True,
                        published_at__isnull=False,
                        published_at__lte=OuterRef("dose_started_at"),
                        version__gt=OuterRef(f"{key}_version"),
                    )
                )
            }
        )
    return sessions.select_related("patient", "course__protocol_version__protocol")


def _consent_problems(kind: str) -> list[tuple[Q, str]]:
    """The ways the latest consent of `kind` fails at the dose start, in consent_status order."""
    key = _kind_key(kind)
    label = ConsentKind(kind).label if kind in ConsentKind.values else kind
    return [
        (Q(**{f"{key}_id__isnull": True}), f"{label}: not signed"),
        (Q(**{f"{key}_withdrawn_at__lte": F("dose_started_at")}), f"{label}: withdrawn"),
        (Q(**{f"{key}_superseded": True}), f"{label}: superseded, re-consent needed"),
        (Q(**{f"{key}_valid_until__lt": F("dose_day")}), f"{label}: expired"),
    ]


def _consent_valid(kind: str) -> Q:
    # Spelled out, not negated: NOT on a NULL subquery value would be NULL, not true.
    key = _kind_key(kind)
    return (
        Q(**{f"{key}_id__isnull": False, f"{key}_superseded": False})
        & (
            Q(**{f"{key}_withdrawn_at__isnull": True})
            | Q(**{f"{key}_withdrawn_at__gt": F("dose_started_at")})
        )
        & Q(**{f"{key}_valid_until__gte": F("dose_day")})
    )


def _consent_compliant(scope: Scope, book: RuleBook) -> Q:
    return _any(
        (
            _version("course__protocol_version", v)
            & _all(_consent_valid(kind) for kind in v.rules.consent_kinds)
            for v in book.readable
        ),
        NEVER,
    )


def _consent_reason(scope: Scope, book: RuleBook) -> Expression:
    whens = []
    for v in book.readable:
        for kind in v.rules.consent_kinds:
            for problem, text in _consent_problems(kind):
                condition = _version("course__protocol_version", v) & problem
                whens.append(When(condition, then=Value(text)))
    whens.append(_unreadable(book))
    return _reason(*whens)


def _consent_definition(book: RuleBook) -> str:
    return (
        "Sessions whose dosing started in the range. Compliant: for every consent kind the "
        "session's protocol version requires, the patient's latest consent signed before the dose "
        "start was not withdrawn, not superseded by a re-consent version published before it, and "
        "not expired on the patient's home-site calendar."
    )


# Step 2: required checks recorded on time ---------------------------------------------------


def _late_entry(book: RuleBook) -> Expression:
    """Each check's late-entry limit from its session's protocol version (SPEC §M3)."""
    return Case(
        *(
            When(
                session__course__protocol_version_id=v.pk,
                then=Value(timedelta(minutes=v.rules.late_entry_minutes)),
            )
            for v in book.readable
        ),
        default=Value(
            timedelta(minutes=max((v.rules.late_entry_minutes for v in book.readable), default=0))
        ),
        output_field=DurationField(),
    )


def _checks(scope: Scope, book: RuleBook) -> QuerySet:
    judged = (
        Q(satisfied_at__isnull=False)
        | ~Q(excused_reason="")
        | (
            # The window has closed, and not after the session was aborted.
            Q(overdue_at__lt=scope.now)
            & (Q(session__aborted_at__isnull=True) | Q(overdue_at__lte=F("session__aborted_at")))
        )
    )
    at_satisfaction = VitalReading.objects.filter(
        session=OuterRef("session"),
        entered_in_error_at__isnull=True,
        measured_at=OuterRef("satisfied_at"),
    )
    late_after = ExpressionWrapper(
        OuterRef("satisfied_at") + OuterRef("late_entry"), output_field=DateTimeField()
    )
    return (
        RequiredCheck.objects.filter(
            scope.in_range("session__dose_started_at"),
            session__site=scope.site,
            # Withdrawn by a re-plan (SPEC §M6): no longer required, not judged.
            voided_at__isnull=True,
        )
        .filter(judged)
        .annotate(
            when=F("session__dose_started_at"),
            late_entry=_late_entry(book),
        )
        .annotate(
            # Late: satisfied by a reading charted more than the version's late-entry limit
            # after it was measured (§M3), with no reading of that instant charted in time.
            charted_late=Exists(at_satisfaction.filter(entered_at__gt=late_after)),
            charted_in_time=Exists(at_satisfaction.filter(entered_at__lte=late_after)),
        )
        .select_related("session__patient")
    )


def _entered_late() -> Q:
    return Q(charted_late=True, charted_in_time=False)


def _checks_compliant(scope: Scope, book: RuleBook) -> Q:
    return Q(satisfied_at__isnull=False) & ~_entered_late()


def _late_minutes(book: RuleBook) -> str:
    minutes = sorted({v.rules.late_entry_minutes for v in book.readable})
    return "/".join(str(m) for m in minutes) or "—"


def _checks_reason(scope: Scope, book: RuleBook) -> Expression:
    return _reason(
        When(
            Q(satisfied_at__isnull=False) & _entered_late(),
            then=Value(
                f"Recorded late: charted more than {_late_minutes(book)} min after measuring"
            ),
        ),
        When(satisfied_at__isnull=False, then=Value("")),
        When(
            ~Q(excused_reason=""),
            then=Concat(Value("Excused: "), "excused_reason", output_field=CharField()),
        ),
        default="Missed: no reading in its window",
    )


def _describe_check(check) -> RowView:
    return RowView(
        record=f"Check: {check.label}",
        record_id=check.pk,
        when=check.due_at or check.when,
        patient_mrn=_mrn(check.session.patient),
        detail=f"Session {check.session_id}",
        ok=check.ok,
        reason=check.reason,
        url=_session_url(check.session_id, "#checks"),
        audit_type="monitoring.requiredcheck",
        audit_id=check.pk,
    )


def _checks_definition(book: RuleBook) -> str:
    return (
        "Required checks of the sessions dosed in the range whose window has closed (or that "
        "were recorded or excused). Compliant: a reading (or CADSS) inside the check's window, "
        f"charted within {_late_minutes(book)} min of measuring. Excused and missed checks are "
        "protocol deviations."
    )


# Step 2: discharges meeting the minimum observation and the discharge criteria ------------

_OBSERVATION_FROM = {
    "dose_start": "dose_started_at",
    "first_device": "dose_started_at",
    "infusion_end": "dose_ended_at",
    "discharge": "discharged_at",
}
_ALDRETE = (
    "discharge__aldrete_activity",
    "discharge__aldrete_respiration",
    "discharge__aldrete_circulation",
    "discharge__aldrete_consciousness",
    "discharge__aldrete_spo2",
)


@cache
def _python_whitespace() -> str:
    return "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())


class _Strip(Func):
    """`str.strip()` in SQL, as `discharge_criteria_problems` strips the prescriber's decision
    (SPEC §M9): TRIM alone strips only spaces, so a decision of a tab or a no-break space
    counted as recorded here and as missing there."""

    function = "TRIM"  # SQLite: trim(X, Y) strips every character of Y
    output_field = CharField()

    def __init__(self, expression) -> None:
        super().__init__(expression, Value(_python_whitespace()))

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, function="BTRIM", **extra)


def _discharges(scope: Scope, book: RuleBook) -> QuerySet:
    return (
        TreatmentSession.objects.filter(
            scope.in_range("discharged_at"),
            site=scope.site,
            status=TreatmentSession.Status.DISCHARGED,
        )
        .annotate(
            when=F("discharged_at"),
            aldrete_total=reduce(lambda a, b: a + b, (F(f) for f in _ALDRETE)),
            decision_length=Length(_Strip("discharge__prescriber_decision")),
        )
        .select_related("patient", "course__protocol_version__protocol")
    )


def _discharge_problems(v: VersionRules) -> list[tuple[Q, str]]:
    rules = v.rules
    rule = rules.discharge
    start = _OBSERVATION_FROM[rules.observation_anchor]
    minutes = timedelta(minutes=rules.minimum_observation_minutes)
    problems = [
        (Q(discharge__isnull=True), "No discharge record"),
        (
            # A NULL anchor (infusion end never recorded) does not satisfy the observation.
            Q(**{f"{start}__isnull": True}) | Q(discharged_at__lt=F(start) + minutes),
            f"Observed less than {rules.minimum_observation_minutes} min",
        ),
        (
            Q(aldrete_total__lt=rule["aldrete_min"]),
            f"Modified Aldrete below {rule['aldrete_min']}",
        ),
        (
            Q(discharge__moaas__lt=rule["moaas_required"])
            | Q(discharge__moaas__gt=rule["moaas_required"]),
            f"MOAA/S not {rule['moaas_required']}",
        ),
    ]
    if rule.get("escort_required"):
        problems.append((Q(discharge__escort_present=False), "No escort present"))
    if rule.get("no_driving_instruction"):
        problems.append(
            (Q(discharge__no_driving_instruction_given=False), "No-driving instruction not given")
        )
    if rule.get("prescriber_decision_required"):
        problems.append((Q(decision_length=0), "No prescriber decision recorded"))
    return problems


def _discharge_met(v: VersionRules) -> Q:
    """Every criterion met, spelled out (NOT on a NULL annotation would be NULL, not true)."""
    rules = v.rules
    rule = rules.discharge
    start = _OBSERVATION_FROM[rules.observation_anchor]
    minutes = timedelta(minutes=rules.minimum_observation_minutes)
    met = Q(
        discharge__isnull=False,
        **{f"{start}__isnull": False},
        discharged_at__gte=F(start) + minutes,
        aldrete_total__gte=rule["aldrete_min"],
        discharge__moaas=rule["moaas_required"],
    )
    if rule.get("escort_required"):
        met &= Q(discharge__escort_present=True)
    if rule.get("no_driving_instruction"):
        met &= Q(discharge__no_driving_instruction_given=True)
    if rule.get("prescriber_decision_required"):
        met &= Q(decision_length__gt=0)
    return _version("course__protocol_version", v) & met


def _discharge_compliant(scope: Scope, book: RuleBook) -> Q:
    return _any((_discharge_met(v) for v in book.readable), NEVER)


def _discharge_reason(scope: Scope, book: RuleBook) -> Expression:
    whens = [
        When(_version("course__protocol_version", v) & problem, then=Value(text))
        for v in book.readable
        for problem, text in _discharge_problems(v)
    ]
    whens.append(_unreadable(book))
    return _reason(*whens)


def _discharge_definition(book: RuleBook) -> str:
    minutes = "; ".join(
        f"{v.name}: {v.rules.minimum_observation_minutes} min from "
        f"{v.rules.observation_anchor.replace('_', ' ')}"
        for v in book.readable
    )
    return (
        "Sessions discharged in the range. Compliant: discharged after the minimum observation "
        f"of the session's protocol version ({minutes or '—'}) with its discharge criteria met "
        "(modified Aldrete total, MOAA/S, escort, no-driving instruction, and the prescriber's "
        "decision where the version requires it)."
    )


# Step 2: critical alerts acknowledged --------------------------------------------------------


def _critical_alerts(scope: Scope, book: RuleBook) -> QuerySet:
    return (
        Alert.objects.filter(
            scope.in_range("raised_at"), session__site=scope.site, level=Alert.Level.CRITICAL
        )
        .annotate(
            when=F("raised_at"),
            delay=ExpressionWrapper(
                F("acknowledged_at") - F("raised_at"), output_field=DurationField()
            ),
        )
        .select_related("session__patient")
    )


def _describe_alert(alert) -> RowView:
    delay = ""
    if alert.delay is not None:
        delay = f"; acknowledged after {format_duration(alert.delay)}"
    return RowView(
        record="Critical alert",
        record_id=alert.pk,
        when=alert.when,
        patient_mrn=_mrn(alert.session.patient),
        detail=f"{alert.message} (session {alert.session_id}){delay}",
        ok=alert.ok,
        reason=alert.reason,
        url=_session_url(alert.session_id, "#alerts"),
        audit_type="monitoring.alert",
        audit_id=alert.pk,
    )


# Step 3: follow-ups ------------------------------------------------------------------------


def _followups_due(scope: Scope) -> QuerySet:
    return (
        FollowUp.objects.filter(scope.in_range("due_at"), site=scope.site)
        .exclude(state=FollowUp.State.CANCELLED)
        .annotate(when=F("due_at"))
        .select_related("patient")
    )


def _followups_judged(scope: Scope, book: RuleBook) -> QuerySet:
    # Open ones still inside their window are not judged yet.
    return _followups_due(scope).filter(
        Q(state__in=[FollowUp.State.COMPLETED, FollowUp.State.MISSED])
        | Q(window_ends_at__lt=scope.now)
    )


def _in_window() -> Q:
    return Q(
        state=FollowUp.State.COMPLETED,
        completed_at__gte=F("due_at"),
        completed_at__lte=F("window_ends_at"),
    )


def _followups_reason(scope: Scope, book: RuleBook) -> Expression:
    return _reason(
        When(_in_window(), then=Value("")),
        When(
            state=FollowUp.State.MISSED,
            then=Concat(Value("Missed: "), "state_reason", output_field=CharField()),
        ),
        When(completed_at__gt=F("window_ends_at"), then=Value("Completed after its window")),
        When(completed_at__lt=F("due_at"), then=Value("Completed before it was due")),
        default="Open past its window",
    )


def _overdue_now(scope: Scope) -> Q:
    return Q(state=FollowUp.State.OPEN, window_ends_at__lt=scope.now)


def _describe_followup(followup) -> RowView:
    return RowView(
        record=f"Follow-up: {followup.label}",
        record_id=followup.pk,
        when=followup.when,
        patient_mrn=_mrn(followup.patient),
        detail=f"{followup.get_state_display()}, window until "
        f"{followup.window_ends_at.isoformat(timespec='minutes')}",
        ok=followup.ok,
        reason=followup.reason,
        url=reverse("followups:complete", kwargs={"followup_id": followup.pk}),
        audit_type="followups.followup",
        audit_id=followup.pk,
    )


# Step 3: REMS monitoring forms -------------------------------------------------------------


def _rems_versions(book: RuleBook) -> tuple[VersionRules, ...]:
    return book.where(lambda rules: rules.drug == DrugLot.Drug.ESKETAMINE)


def _rems_rules(book: RuleBook) -> list[tuple[VersionRules, FollowUpRule]]:
    """The REMS monitoring form duty of each esketamine version (§F6). By its code, not by
    `per_session`: the next-day call is owed for every session too."""
    return [
        (v, rule)
        for v in _rems_versions(book)
        for rule in v.rules.followups
        if rule.code == REMS_FORM_CODE
    ]


def _rems_codes(book: RuleBook) -> list[str]:
    return sorted({rule.code for _, rule in _rems_rules(book)})


def _rems_sessions(scope: Scope, book: RuleBook) -> QuerySet:
    form = FollowUp.objects.filter(session=OuterRef("pk"), code__in=_rems_codes(book)).order_by(
        "id"
    )
    return (
        TreatmentSession.objects.filter(
            scope.in_range("discharged_at"),
            site=scope.site,
            status=TreatmentSession.Status.DISCHARGED,
            course__protocol_version__in=[v.pk for v in _rems_versions(book)],
        )
        .annotate(
            when=F("discharged_at"),
            form_id=Subquery(form.values("pk")[:1]),
            form_state=Subquery(form.values("state")[:1]),
            form_completed_at=Subquery(form.values("completed_at")[:1]),
            form_window_ends_at=Subquery(form.values("window_ends_at")[:1]),
            form_reason=Subquery(form.values("state_reason")[:1]),
        )
        # A form still open inside its window is not judged yet. (Spelled out: an exclude()
        # on these annotations would also drop the sessions that have no form, as NULL.)
        .filter(
            Q(form_id__isnull=True)
            | ~Q(form_state=FollowUp.State.OPEN)
            | Q(form_window_ends_at__lt=scope.now)
        )
        .select_related("patient", "course__protocol_version__protocol")
    )


def _rems_compliant(scope: Scope, book: RuleBook) -> Q:
    return Q(
        form_state=FollowUp.State.COMPLETED,
        form_completed_at__lte=F("form_window_ends_at"),
    )


def _rems_reason(scope: Scope, book: RuleBook) -> Expression:
    return _reason(
        When(form_id__isnull=True, then=Value("No REMS form duty planned")),
        When(_rems_compliant(scope, book), then=Value("")),
        When(
            form_state=FollowUp.State.MISSED,
            then=Concat(Value("Missed: "), "form_reason", output_field=CharField()),
        ),
        When(form_state=FollowUp.State.CANCELLED, then=Value("REMS form cancelled")),
        When(form_state=FollowUp.State.COMPLETED, then=Value("Filed after its window")),
        default="Not filed; its window has ended",
    )


def _describe_rems(session) -> RowView:
    view = _describe_session(session)
    if session.form_id is None:
        return view
    return replace(
        view,
        record="Session (REMS form)",
        detail=f"{view.detail}; REMS form #{session.form_id}",
        url=reverse("followups:complete", kwargs={"followup_id": session.form_id}),
    )


def _rems_definition(book: RuleBook) -> str:
    # The version's REMS window (SPEC §F6); the form's own window_ends_at was planned from it.
    windows = sorted({v.rules.rems_form_due_days for v, _ in _rems_rules(book)})
    days = " / ".join(f"{d:g}" for d in windows) or "—"
    return (
        "Esketamine sessions discharged in the range (a REMS form still inside its window is "
        f"not judged yet). Compliant: the session's REMS monitoring form filed within {days} days "
        "of the session (the protocol version's per-session duty)."
    )


# Across the steps ---------------------------------------------------------------------------


def _incidents(scope: Scope, book: RuleBook) -> QuerySet:
    return (
        Incident.objects.filter(
            scope.in_range("opened_at"), site=scope.site, kind=Incident.Kind.CS_DISCREPANCY
        )
        .annotate(when=F("opened_at"))
        .select_related("lot")
    )


def _describe_incident(incident) -> RowView:
    return RowView(
        record="Controlled-substance incident",
        record_id=incident.pk,
        when=incident.when,
        patient_mrn="",
        detail=str(incident.lot) if incident.lot_id else "",
        ok=incident.ok,
        reason=incident.reason,
        url=reverse("monitoring:register"),
        audit_type="monitoring.incident",
        audit_id=incident.pk,
    )


def latest_run() -> QuerySet:
    return VerificationRun.objects.order_by("-started_at", "-id")


# Links from a signature to the record it signs (audit:record takes the model label).
_SIGNED_PAGES = {
    "monitoring.treatmentsession": ("monitoring:session", "session_id"),
    "protocols.assessment": ("protocols:assessment_detail", "assessment_id"),
    "followups.followup": ("followups:complete", "followup_id"),
}


def _invalid_signatures(scope: Scope, book: RuleBook) -> QuerySet:
    signature = Signature.objects.filter(pk=OuterRef("source_id"))
    return Finding.objects.filter(
        scope.in_range("occurred_at"),
        run=Subquery(latest_run().values("pk")[:1]),
        kind=Finding.Kind.SIGNATURE_INVALID,
        site=scope.site,
    ).annotate(
        when=F("occurred_at"),
        signed_app=Subquery(signature.values("content_type__app_label")[:1]),
        signed_model=Subquery(signature.values("content_type__model")[:1]),
        signed_id=Subquery(signature.values("object_id")[:1]),
    )


def _describe_finding(finding) -> RowView:
    label = f"{finding.signed_app}.{finding.signed_model}" if finding.signed_app else ""
    page = _SIGNED_PAGES.get(label)
    return RowView(
        record="Signature invalid",
        record_id=finding.pk,
        when=finding.when,
        patient_mrn="",
        detail=f"Signature #{finding.source_id}" if finding.source_id else "",
        ok=finding.ok,
        reason=finding.reason,
        url=reverse(page[0], kwargs={page[1]: finding.signed_id}) if page else "",
        audit_type=label,
        audit_id=finding.signed_id,
    )


def _text(field: str) -> Callable[[Scope, RuleBook], Expression]:
    return lambda scope, book: F(field)


FIGURES: dict[str, Figure] = {
    figure.slug: figure
    for figure in (
        Figure(
            slug="first-session-approval",
            title="First sessions with an approved assessment signed before dosing",
            step="1",
            kind="rate",
            population=_first_sessions,
            compliant=_step1_compliant,
            reason=_step1_reason,
            describe=_describe_session,
            definition=_step1_definition,
        ),
        Figure(
            slug="consent-at-dosing",
            title="Sessions with valid consent at dosing",
            step="2",
            kind="rate",
            population=_dosed_sessions,
            compliant=_consent_compliant,
            reason=_consent_reason,
            describe=_describe_session,
            definition=_consent_definition,
        ),
        Figure(
            slug="checks-on-time",
            title="Required checks recorded on time",
            step="2",
            kind="rate",
            population=_checks,
            compliant=_checks_compliant,
            reason=_checks_reason,
            describe=_describe_check,
            definition=_checks_definition,
        ),
        Figure(
            slug="discharges",
            title="Discharges meeting the minimum observation and the criteria",
            step="2",
            kind="rate",
            population=_discharges,
            compliant=_discharge_compliant,
            reason=_discharge_reason,
            describe=_describe_session,
            definition=_discharge_definition,
        ),
        Figure(
            slug="critical-alerts",
            title="Critical alerts acknowledged",
            step="2",
            kind="rate",
            population=_critical_alerts,
            compliant=lambda scope, book: Q(acknowledged_at__isnull=False),
            reason=lambda scope, book: _reason(
                When(acknowledged_at__isnull=True, then=Value("Not acknowledged"))
            ),
            describe=_describe_alert,
            definition=lambda book: (
                "Critical alerts raised in the range. Compliant: acknowledged (who, when, action "
                "taken). The median time to acknowledge is over the acknowledged ones."
            ),
        ),
        Figure(
            slug="followups-in-window",
            title="Follow-ups completed within their window",
            step="3",
            kind="rate",
            population=_followups_judged,
            compliant=lambda scope, book: _in_window(),
            reason=_followups_reason,
            describe=_describe_followup,
            definition=lambda book: (
                "Follow-ups and duties of the site due in the range, not cancelled, completed or "
                "missed or past their window. Compliant: completed between its due time and the "
                "end of its window (both set from the protocol version's follow-up plan)."
            ),
        ),
        Figure(
            slug="followups-overdue",
            title="Follow-ups overdue now",
            step="3",
            kind="problems",
            population=lambda scope, book: _followups_due(scope),
            compliant=lambda scope, book: ~_overdue_now(scope),
            reason=lambda scope, book: _reason(
                When(_overdue_now(scope), then=Value("Open past its window"))
            ),
            describe=_describe_followup,
            definition=lambda book: (
                "Follow-ups and duties of the site due in the range, not cancelled. Counted: "
                "those still open now although their window has ended."
            ),
            trend=False,
        ),
        Figure(
            slug="rems-forms",
            title="REMS monitoring forms filed in time",
            step="3",
            kind="rate",
            population=_rems_sessions,
            compliant=_rems_compliant,
            reason=_rems_reason,
            describe=_describe_rems,
            definition=_rems_definition,
        ),
        Figure(
            slug="cs-discrepancies",
            title="Controlled-substance discrepancies",
            step="x",
            kind="tally",
            population=_incidents,
            compliant=lambda scope, book: NEVER,
            reason=_text("description"),
            describe=_describe_incident,
            definition=lambda book: (
                "Incidents opened in the range because a register line took a lot's balance "
                "below zero (SPEC §M12)."
            ),
            trend=False,
        ),
        Figure(
            slug="signatures-invalid",
            title="Signatures invalid",
            step="x",
            kind="tally",
            population=_invalid_signatures,
            compliant=lambda scope, book: NEVER,
            reason=_text("detail"),
            describe=_describe_finding,
            definition=lambda book: (
                "Signatures of the site's records, signed in the range, that the latest "
                "verification run found no longer matching their record."
            ),
            trend=False,
        ),
    )
}


# --- Reads ----------------------------------------------------------------------------------------


def judged(figure: Figure, scope: Scope, book: RuleBook) -> QuerySet:
    """The figure's population with `ok` (compliant) — never NULL, so it sorts and filters."""
    return figure.population(scope, book).annotate(
        ok=Case(
            When(figure.compliant(scope, book), then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        )
    )


@dataclass(frozen=True)
class Totals:
    compliant: int
    total: int

    @property
    def violations(self) -> int:
        return self.total - self.compliant

    def percent(self, figure: Figure) -> float | None:
        if not self.total or figure.kind == "tally":
            return None
        shown = self.violations if figure.counts_violations else self.compliant
        return round(100 * shown / self.total, 1)


def figure_totals(figure: Figure, scope: Scope, book: RuleBook) -> Totals:
    """One aggregate query: compliant and total over the range."""
    counts = judged(figure, scope, book).aggregate(
        compliant=Count("pk", filter=Q(ok=True)), total=Count("pk")
    )
    return Totals(counts["compliant"] or 0, counts["total"] or 0)


@dataclass(frozen=True)
class Week:
    starts: date
    compliant: int
    total: int

    @property
    def percent(self) -> float | None:
        return round(100 * self.compliant / self.total, 1) if self.total else None


def figure_trend(figure: Figure, scope: Scope, book: RuleBook) -> list[Week]:
    """One grouped query: compliant and total per week (Monday, site time) of the range."""
    rows = (
        judged(figure, scope, book)
        .annotate(week=TruncWeek("when", tzinfo=scope.tz, output_field=DateTimeField()))
        .values("week")
        .annotate(compliant=Count("pk", filter=Q(ok=True)), total=Count("pk"))
        .order_by("week")
    )
    return [
        Week(timezone.localtime(row["week"], scope.tz).date(), row["compliant"], row["total"])
        for row in rows
    ]


def figure_rows(
    figure: Figure, scope: Scope, book: RuleBook, *, violations_only: bool = False
) -> QuerySet:
    """The records behind a figure, violations first, newest first; with `reason`."""
    rows = judged(figure, scope, book).annotate(reason=figure.reason(scope, book))
    if violations_only:
        rows = rows.filter(ok=False)
    return rows.order_by(*ROW_ORDER)


ROW_ORDER = ("ok", "-when", "-id")


def median_acknowledgement(scope: Scope, book: RuleBook, *, acknowledged: int) -> timedelta | None:
    """The median of acknowledged_at - raised_at, in the database on every backend: the middle
    row (or the two middle rows) of the acknowledged alerts ordered by that delay."""
    if not acknowledged:
        return None
    middle = (acknowledged - 1) // 2
    count = 1 if acknowledged % 2 else 2
    delays = list(
        _critical_alerts(scope, book)
        .filter(acknowledged_at__isnull=False)
        .order_by("delay", "id")
        .values_list("delay", flat=True)[middle : middle + count]
    )
    return sum(delays, timedelta()) / len(delays)


def format_duration(value: timedelta | None) -> str:
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if seconds else f"{minutes} min"


@dataclass(frozen=True)
class FigureResult:
    figure: Figure
    totals: Totals
    definition: str
    trend: list[Week]

    @property
    def shown(self) -> int:
        return self.totals.violations if self.figure.counts_violations else self.totals.compliant

    @property
    def percent(self) -> float | None:
        return self.totals.percent(self.figure)


@dataclass(frozen=True)
class Dashboard:
    scope: Scope
    steps: list[tuple[str, list[FigureResult]]]
    median_ack: timedelta | None
    last_run: VerificationRun | None

    @property
    def figures(self) -> dict[str, FigureResult]:
        return {r.figure.slug: r for _, results in self.steps for r in results}

    def chart(self) -> dict:
        """Weekly compliance percentages of the main figures, for Chart.js."""
        weeks = sorted({w.starts for _, results in self.steps for r in results for w in r.trend})
        series = []
        for _, results in self.steps:
            for result in results:
                if not result.figure.trend:
                    continue
                by_week = {w.starts: w.percent for w in result.trend}
                series.append(
                    {"label": result.figure.title, "data": [by_week.get(w) for w in weeks]}
                )
        return {"labels": [w.isoformat() for w in weeks], "series": series}


def compliance_dashboard(*, scope: Scope) -> Dashboard:
    """Every figure of SPEC §C5 for `scope`: a constant number of queries, whatever the data."""
    book = load_rule_book()
    steps: dict[str, list[FigureResult]] = {key: [] for key in STEPS}
    for figure in FIGURES.values():
        trend = figure_trend(figure, scope, book) if figure.trend else []
        steps[figure.step].append(
            FigureResult(
                figure=figure,
                totals=figure_totals(figure, scope, book),
                definition=figure.definition(book),
                trend=trend,
            )
        )
    alerts = next(r for r in steps["2"] if r.figure.slug == "critical-alerts")
    return Dashboard(
        scope=scope,
        steps=[(STEPS[key], results) for key, results in steps.items()],
        median_ack=median_acknowledgement(scope, book, acknowledged=alerts.totals.compliant),
        last_run=latest_run().first(),
    )
