"""One rule, two places: "discharge criteria met" (SPEC §M9) decided in Python and in SQL.

Python decides it when a discharge is signed: the minimum observation (`gates.observation_ends_at`,
§M9 "minimum observation met") and the criteria (`discharge_criteria_problems`: modified Aldrete
total, MOAA/S, escort, no-driving instruction, the prescriber's decision where the protocol
version asks for one). The compliance dashboard decides it again in SQL for the figure
"discharges meeting the minimum observation and criteria" (§C5). Hypothesis generates discharged
sessions around every edge (each Aldrete item 0-2, MOAA/S 0-5, the discharge a microsecond, a
second or minutes either side of the end of observation, across both DST changes in London and
New York, blank-looking decisions) and both must give the same verdict and the same first reason.

The sessions are written directly (as tests/compliance does): a discharge that misses its
criteria cannot be made through the services, which refuse it — that is the point.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from compliance.selectors import FIGURES, Scope, figure_rows, load_rule_book
from monitoring import gates
from monitoring.models import Discharge, TreatmentSession
from monitoring.services import discharge_criteria_problems
from protocols import services as protocol_services
from protocols.models import Protocol, ProtocolVersion, TreatmentCourse
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db

ALDRETE = (
    "aldrete_activity",
    "aldrete_respiration",
    "aldrete_circulation",
    "aldrete_consciousness",
    "aldrete_spo2",
)

# Dose starts on ordinary days and on the four DST changes of 2025 (London 30 Mar / 26 Oct at
# 01:00 UTC, New York 9 Mar at 07:00 UTC / 2 Nov at 06:00 UTC): the observation crosses them.
DOSE_STARTS = [
    datetime(2025, 3, 4, 10, 0, tzinfo=UTC),
    datetime(2025, 3, 30, 0, 30, tzinfo=UTC),
    datetime(2025, 10, 26, 0, 30, tzinfo=UTC),
    datetime(2025, 3, 9, 6, 30, tzinfo=UTC),
    datetime(2025, 11, 2, 5, 30, tzinfo=UTC),
    datetime(2025, 6, 30, 23, 15, tzinfo=UTC),
]
EDGE = [
    timedelta(0),
    timedelta(microseconds=-1),
    timedelta(microseconds=1),
    timedelta(seconds=-1),
    timedelta(seconds=1),
    timedelta(minutes=-1),
    timedelta(minutes=1),
]
# Texts that look blank to a reader: str.strip() removes all of them (SPEC §M9: a decision is
# recorded, not whitespace).
BLANK_LOOKING = ["", " ", "   ", "\t", "\n", "\r\n", " \t\n", "\u00a0", "\u2003", "\u3000", "\x1c"]
DECISIONS = [*BLANK_LOOKING, "Fit to leave", "  ok  ", "\tok", "-", "0"]


@pytest.fixture
def versions(administrator) -> dict[str, ProtocolVersion]:
    """The two shipped versions and a variant with every optional criterion flipped."""
    iv = protocol_services.current_version(Protocol.objects.get(slug="iv-ketamine"))
    esk = protocol_services.current_version(Protocol.objects.get(slug="esketamine-rems"))
    rules = copy.deepcopy(iv.rules)
    rules["observation_anchor"] = "dose_start"
    rules["minimum_observation_minutes"] = 45
    rules["discharge"] = {
        **rules["discharge"],
        "aldrete_min": 8,
        "moaas_required": 4,
        "escort_required": False,
        "no_driving_instruction": False,
        "prescriber_decision_required": True,
    }
    variant = protocol_services.protocol_version_create(
        protocol=iv.protocol,
        acting_user=administrator,
        rules=rules,
        change_summary="Parity test: observation from the dose start, other criteria",
    )
    variant = protocol_services.protocol_version_publish(version=variant, acting_user=administrator)
    return {"iv": iv, "esk": esk, "variant": variant}


@pytest.fixture
def courses(site, nurse, psychiatrist, versions) -> dict[str, TreatmentCourse]:
    courses = {}
    for key, version in versions.items():
        patient = PatientFactory(home_site=site, created_by=nurse, mrn=f"DISCHARGE-{key}")
        courses[key] = TreatmentCourse.objects.create(
            patient=patient,
            protocol_version=version,
            indication=TreatmentCourse.Indication.TRD,
            responsible_psychiatrist=psychiatrist,
            planned_sessions=6,
            status=TreatmentCourse.Status.ACTIVE,
            created_by=nurse,
        )
    return courses


@dataclass(frozen=True)
class Case:
    version: str
    dose_at: datetime
    infusion: timedelta | None  # dose_ended_at - dose_started_at; None: never recorded
    discharge_from_end: timedelta  # discharged_at relative to the end of observation
    values: dict


@st.composite
def cases(draw) -> Case:
    version = draw(st.sampled_from(["iv", "esk", "variant"]))
    dose_at = draw(st.sampled_from(DOSE_STARTS)) + timedelta(
        microseconds=draw(st.sampled_from([0, 1, 500_000, 999_999]))
    )
    infusion = draw(
        st.one_of(
            st.sampled_from([timedelta(minutes=40), timedelta(minutes=10)]),
            st.integers(0, 90 * 60).map(lambda s: timedelta(seconds=s)),
            st.integers(0, 90 * 60).map(lambda s: timedelta(seconds=s)),
            st.none(),
        )
    )
    # Biased towards meeting each criterion, so that every criterion is often the one that
    # decides: the discharge usually after the end of observation, items usually 2, MOAA/S
    # usually 4 or 5 (the variant requires 4), escort and instruction usually given.
    discharge_from_end = draw(
        st.one_of(
            st.sampled_from(EDGE),
            st.integers(0, 180).map(lambda m: timedelta(minutes=m)),
            st.integers(0, 180).map(lambda m: timedelta(minutes=m)),
            st.integers(-180, 0).map(lambda m: timedelta(minutes=m)),
        )
    )
    item = st.sampled_from([2] * 8 + [1, 0])
    values = {name: draw(item) for name in ALDRETE}
    values["moaas"] = draw(st.one_of(st.sampled_from([5, 4]), st.integers(0, 5)))
    values["escort_present"] = draw(st.sampled_from([True, True, True, False]))
    values["no_driving_instruction_given"] = draw(st.sampled_from([True, True, True, False]))
    values["prescriber_decision"] = draw(
        st.one_of(
            st.sampled_from(DECISIONS),
            st.just("Fit to leave"),
            st.text(
                st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=3
            ),
        )
    )
    return Case(version, dose_at, infusion, discharge_from_end, values)


def _discharged_session(case: Case, course: TreatmentCourse, *, nurse, supervisor):
    """A dosed session, then its discharge row, then the discharge itself (which locks it)."""
    dose_at = case.dose_at
    session = TreatmentSession.objects.create(
        course=course,
        patient=course.patient,
        site=course.patient.home_site,
        status=TreatmentSession.Status.MONITORING,
        scheduled_at=dose_at - timedelta(minutes=30),
        chair="1",
        supervising_clinician=supervisor,
        escort_confirmed=True,
        escort_details="Partner",
        checked_in_at=dose_at - timedelta(minutes=20),
        checked_in_by=nurse,
        dose_started_at=dose_at,
        dose_ended_at=dose_at + case.infusion if case.infusion is not None else None,
        created_by=nurse,
    )
    # Where the observation ends, only to place the discharge near it; when it never ends
    # (infusion end not recorded), around the longest observation instead.
    ends = gates.observation_ends_at(session) or dose_at + timedelta(minutes=120)
    Discharge.objects.create(session=session, discharged_by=supervisor, **case.values)
    session.status = TreatmentSession.Status.DISCHARGED
    session.discharged_at = session.locked_at = ends + case.discharge_from_end
    session.save(update_fields=["status", "discharged_at", "locked_at"])
    return TreatmentSession.objects.select_related("course__protocol_version").get(pk=session.pk)


def _python_verdict(session: TreatmentSession) -> str:
    """'' when discharge criteria are met, else the first failing one, in SPEC §M9's order."""
    ends = gates.observation_ends_at(session)
    if ends is None or session.discharged_at < ends:
        return "observation"
    discharge = Discharge.objects.get(session=session)
    values = {f: getattr(discharge, f) for f in (*ALDRETE, "moaas")}
    values |= {
        "escort_present": discharge.escort_present,
        "no_driving_instruction_given": discharge.no_driving_instruction_given,
        "prescriber_decision": discharge.prescriber_decision,
    }
    problems = discharge_criteria_problems(session, values)
    return next(iter(problems), "")


# The compliance figure's reasons, by the criterion they name.
SQL_REASONS = {
    "Observed less than": "observation",
    "Modified Aldrete below": "aldrete_activity",
    "MOAA/S not": "moaas",
    "No escort present": "escort_present",
    "No-driving instruction not given": "no_driving_instruction_given",
    "No prescriber decision recorded": "prescriber_decision",
}


def _sql_verdict(session: TreatmentSession) -> str:
    site = session.site
    day = session.discharged_at.astimezone(site.tzinfo).date()
    scope = Scope(
        site=site,
        start=day - timedelta(days=1),
        end=day + timedelta(days=1),
        now=session.discharged_at + timedelta(days=1),
    )
    (row,) = figure_rows(FIGURES["discharges"], scope, load_rule_book()).filter(pk=session.pk)
    if row.ok:
        assert row.reason == "", row.reason
        return ""
    matches = [key for prefix, key in SQL_REASONS.items() if row.reason.startswith(prefix)]
    assert matches, f"unexpected reason {row.reason!r}"
    return matches[0]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
def test_m9_c5_discharge_criteria_python_and_sql_agree_on_generated_discharges(
    case, courses, nurse, anesthesiologist
):
    """SPEC §M9 (minimum observation, modified Aldrete, MOAA/S, escort, no driving, prescriber
    decision) and §C5 ("discharges meeting the minimum observation and criteria"): the same
    verdict, and the same first failing criterion, on every generated discharge."""
    with transaction.atomic():
        session = _discharged_session(
            case, courses[case.version], nurse=nurse, supervisor=anesthesiologist
        )

        python, sql = _python_verdict(session), _sql_verdict(session)
        event(f"python verdict: {python or 'met'}")  # --hypothesis-show-statistics

        transaction.set_rollback(True)
    assert sql == python, (case, session.discharged_at)


# --- The edges, one by one, so a regression names its case ---------------------------------


@pytest.mark.parametrize("offset", EDGE)
@pytest.mark.parametrize("version", ["iv", "esk", "variant"])
def test_m9_c5_the_end_of_observation_is_judged_alike_at_and_either_side_of_it(
    courses, nurse, anesthesiologist, version, offset
):
    values = {**dict.fromkeys(ALDRETE, 2), "moaas": 5 if version != "variant" else 4}
    values |= {
        "escort_present": True,
        "no_driving_instruction_given": True,
        "prescriber_decision": "Fit to leave",
    }
    dose_at = DOSE_STARTS[1] + timedelta(microseconds=1)
    case = Case(version, dose_at, timedelta(minutes=40), offset, values)
    session = _discharged_session(case, courses[version], nurse=nurse, supervisor=anesthesiologist)

    expected = "" if offset >= timedelta(0) else "observation"
    assert _python_verdict(session) == expected
    assert _sql_verdict(session) == expected


@pytest.mark.parametrize("decision", BLANK_LOOKING)
def test_m9_c5_a_blank_looking_prescriber_decision_is_no_decision_in_both(
    courses, nurse, anesthesiologist, decision
):
    values = {**dict.fromkeys(ALDRETE, 2), "moaas": 5, "escort_present": True}
    values |= {"no_driving_instruction_given": True, "prescriber_decision": decision}
    case = Case("esk", DOSE_STARTS[0], timedelta(minutes=10), timedelta(minutes=1), values)
    session = _discharged_session(case, courses["esk"], nurse=nurse, supervisor=anesthesiologist)

    assert _python_verdict(session) == "prescriber_decision"
    assert _sql_verdict(session) == "prescriber_decision"


@pytest.mark.parametrize(
    ("items", "expected"),
    [((2, 2, 2, 2, 1), ""), ((2, 2, 2, 2, 2), ""), ((2, 2, 2, 1, 1), "aldrete_activity")],
)
def test_m9_c5_an_aldrete_total_at_just_below_and_above_nine_is_judged_alike(
    courses, nurse, anesthesiologist, items, expected
):
    values = {**dict(zip(ALDRETE, items, strict=True)), "moaas": 5, "escort_present": True}
    values |= {"no_driving_instruction_given": True, "prescriber_decision": ""}
    case = Case("iv", DOSE_STARTS[0], timedelta(minutes=40), timedelta(0), values)
    session = _discharged_session(case, courses["iv"], nurse=nurse, supervisor=anesthesiologist)

    assert _python_verdict(session) == expected
    assert _sql_verdict(session) == expected
