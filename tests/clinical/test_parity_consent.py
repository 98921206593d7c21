"""One rule, two places: consent status at dosing (SPEC §P4) decided in Python and in SQL.

Python decides it at the start gate (`patients.selectors.patient_consent_summary` /
`consent_status`: the latest consent of each kind signed by then is valid unless withdrawn by
then, superseded by a re-consent version published by then, or expired on the patient's
home-site calendar). The compliance dashboard decides it again in SQL for the figure "sessions
with valid consent at dosing" (§C5). Hypothesis generates worlds — template versions published
before, at or after the dose, re-consent or not, with short and long validity; consents signed a
second before, at or after the dose, withdrawn or not, valid until the day before, of or after
the dose — with the dose at the edges of the patient's home-site day (00:00, 23:59:59.999999)
on both DST changes in London and New York and in Auckland (a day ahead of UTC). Both rules are
evaluated at the same instant (the dose start) and must give the same verdict and reason.

Consents are recorded and withdrawn through the services, at their time (time-machine).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from clinic.models import Role
from compliance.selectors import FIGURES, Scope, figure_rows, load_rule_book
from monitoring.models import TreatmentSession
from patients import services as patient_services
from patients.models import ConsentKind, ConsentRecord
from patients.selectors import ConsentStatus, patient_consent_summary
from protocols import services as protocol_services
from protocols.models import Protocol, ProtocolVersion, TreatmentCourse
from tests.factories import ConsentTemplateFactory, PatientFactory, SiteFactory, UserFactory

pytestmark = pytest.mark.django_db

KETAMINE, REMS, DATA = (
    ConsentKind.KETAMINE_TREATMENT.value,
    ConsentKind.ESKETAMINE_REMS.value,
    ConsentKind.DATA_SHARING.value,
)
ZONES = ("Europe/London", "America/New_York", "Pacific/Auckland")
# 2025's DST changes: London 30 Mar / 26 Oct, New York 9 Mar / 2 Nov; Auckland 6 Apr / 28 Sep.
DOSE_DAYS = [
    date(2025, 3, 9),
    date(2025, 3, 30),
    date(2025, 10, 26),
    date(2025, 11, 2),
    date(2025, 4, 6),
    date(2025, 9, 28),
    date(2025, 6, 15),
]
DOSE_TIMES = [
    time(0, 0),
    time(0, 0, 0, 1),
    time(0, 30),
    time(1, 30),  # twice on a fall-back day (fold picks which)
    time(2, 30),  # missing on a spring-forward day in New York
    time(12, 0),
    time(23, 59, 59),
    time(23, 59, 59, 999_999),
]
NEAR = [
    timedelta(0),
    timedelta(microseconds=-1),
    timedelta(microseconds=1),
    timedelta(seconds=-1),
    timedelta(seconds=1),
    timedelta(days=-1),
    timedelta(days=1),
]
# What the compliance figure writes for each status (compliance.selectors._consent_problems).
KINDS = {"iv": [KETAMINE], "esk": [REMS], "two-kinds": [KETAMINE, DATA]}
SQL_TEXT = {
    ConsentStatus.NOT_SIGNED: "not signed",
    ConsentStatus.WITHDRAWN: "withdrawn",
    ConsentStatus.SUPERSEDED: "superseded, re-consent needed",
    ConsentStatus.EXPIRED: "expired",
}


@dataclass(frozen=True)
class TemplateSpec:
    kind: str
    version: int
    published: timedelta | None  # relative to the dose; None: never published
    requires_reconsent: bool
    validity_days: int


@dataclass(frozen=True)
class ConsentSpec:
    template: int  # index into the world's templates
    signed: timedelta  # relative to the dose
    valid_until: int | None  # days after the dose's home-site day; None: the template's validity
    withdrawn: timedelta | None  # relative to the dose


@dataclass(frozen=True)
class World:
    zone: str
    version: str
    dose_at: datetime
    templates: tuple[TemplateSpec, ...]
    consents: tuple[ConsentSpec, ...]


def _offsets(max_days: int) -> st.SearchStrategy[timedelta]:
    return st.one_of(
        st.sampled_from(NEAR),
        st.integers(-max_days * 24 * 60, 24 * 60).map(lambda m: timedelta(minutes=m)),
    )


@st.composite
def worlds(draw) -> World:
    zone = draw(st.sampled_from(ZONES))
    local = datetime.combine(
        draw(st.sampled_from(DOSE_DAYS)), draw(st.sampled_from(DOSE_TIMES)), ZoneInfo(zone)
    ).replace(fold=draw(st.integers(0, 1)))
    dose_at = local.astimezone(UTC)
    version = draw(st.sampled_from(list(KINDS)))
    # Mostly published long before the dose; sometimes around it, sometimes never.
    published = st.one_of(
        st.just(timedelta(days=-400)),
        st.just(timedelta(days=-400)),
        st.just(timedelta(days=-400)),
        st.none(),
        _offsets(400),
    )
    templates = []
    for kind in (KETAMINE, REMS, DATA):
        for number in range(1, draw(st.integers(1, 3)) + 1):
            templates.append(
                TemplateSpec(
                    kind=kind,
                    version=number,
                    published=draw(published),
                    requires_reconsent=draw(st.booleans()),
                    validity_days=draw(st.sampled_from([1, 2, 30, 365])),
                )
            )
    # Consents mostly to the kinds the version requires, mostly signed before the dose.
    kind_of = st.one_of(st.sampled_from(KINDS[version]), st.sampled_from([KETAMINE, REMS, DATA]))
    signed = st.one_of(
        st.sampled_from(NEAR),
        st.integers(-399 * 24 * 60, 0).map(lambda m: timedelta(minutes=m)),
    )
    consents = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(kind_of)
        choices = [i for i, t in enumerate(templates) if t.kind == kind]
        consents.append(
            ConsentSpec(
                template=draw(st.sampled_from(choices)),
                signed=draw(signed),
                valid_until=draw(st.one_of(st.none(), st.integers(-2, 2))),
                withdrawn=draw(st.one_of(st.none(), st.none(), _offsets(30))),
            )
        )
    return World(zone, version, dose_at, tuple(templates), tuple(consents))


@pytest.fixture
def staff(db):
    sites = {zone: SiteFactory(name=f"Parity {zone}", time_zone=zone) for zone in ZONES}
    everywhere = list(sites.values())
    return {
        "sites": sites,
        "nurse": UserFactory(roles=[Role.NURSE], sites=everywhere),
        "psychiatrist": UserFactory(roles=[Role.PSYCHIATRIST], sites=everywhere),
        "anesthesiologist": UserFactory(roles=[Role.ANESTHESIOLOGIST], sites=everywhere),
        "administrator": UserFactory(roles=[Role.ADMINISTRATOR], sites=everywhere),
    }


@pytest.fixture
def versions(staff) -> dict[str, ProtocolVersion]:
    """The two shipped versions and one requiring two consents (treatment and data sharing)."""
    iv = protocol_services.current_version(Protocol.objects.get(slug="iv-ketamine"))
    esk = protocol_services.current_version(Protocol.objects.get(slug="esketamine-rems"))
    rules = copy.deepcopy(iv.rules)
    rules["consent_kinds"] = [KETAMINE, DATA]
    two = protocol_services.protocol_version_create(
        protocol=iv.protocol,
        acting_user=staff["administrator"],
        rules=rules,
        change_summary="Parity test: treatment and data-sharing consent",
    )
    two = protocol_services.protocol_version_publish(
        version=two, acting_user=staff["administrator"]
    )
    return {"iv": iv, "esk": esk, "two-kinds": two}


def _build(world: World, staff, versions, time_machine) -> TreatmentSession:
    """The world through the services (consents at their own time), then the dosed session."""
    nurse, psychiatrist = staff["nurse"], staff["psychiatrist"]
    # The clinic's session site is London's; the patient's calendar is their home site's.
    session_site = staff["sites"]["Europe/London"]
    home = staff["sites"][world.zone]
    dose_at = world.dose_at
    dose_day = dose_at.astimezone(ZoneInfo(world.zone)).date()
    time_machine.move_to(dose_at - timedelta(days=500), tick=False)
    patient = PatientFactory(home_site=home, created_by=nurse)
    templates = [
        ConsentTemplateFactory(
            kind=spec.kind,
            version=spec.version,
            published_at=dose_at + spec.published if spec.published is not None else None,
            requires_reconsent=spec.requires_reconsent,
            validity_days=spec.validity_days,
            created_by=staff["administrator"],
        )
        for spec in world.templates
    ]
    recorded: list[tuple[ConsentRecord, ConsentSpec]] = []
    for spec in world.consents:
        template = templates[spec.template]
        signed_at = dose_at + spec.signed
        if template.published_at is None or template.published_at > signed_at:
            continue  # nobody signs a version before it is published
        signed_day = signed_at.astimezone(ZoneInfo(world.zone)).date()
        last_day = signed_day + timedelta(days=template.validity_days - 1)
        valid_until = None
        if spec.valid_until is not None:
            wanted = dose_day + timedelta(days=spec.valid_until)
            valid_until = min(max(wanted, signed_day), last_day)
        time_machine.move_to(signed_at, tick=False)
        consent = patient_services.consent_record(
            patient=patient,
            template=template,
            acting_user=nurse,
            signature_method="tablet",
            signed_at=signed_at,
            valid_until=valid_until,
            prescriber=psychiatrist if template.kind == REMS else None,
        )
        recorded.append((consent, spec))
    for consent, spec in recorded:
        if spec.withdrawn is not None:
            time_machine.move_to(max(consent.signed_at, dose_at + spec.withdrawn), tick=False)
            patient_services.consent_withdraw(
                consent=consent, acting_user=nurse, reason="Changed their mind"
            )
    time_machine.move_to(dose_at, tick=False)
    course = TreatmentCourse.objects.create(
        patient=patient,
        protocol_version=versions[world.version],
        indication=TreatmentCourse.Indication.TRD,
        responsible_psychiatrist=psychiatrist,
        planned_sessions=6,
        status=TreatmentCourse.Status.ACTIVE,
        created_by=nurse,
    )
    return TreatmentSession.objects.create(
        course=course,
        patient=patient,
        site=session_site,
        status=TreatmentSession.Status.MONITORING,
        scheduled_at=dose_at - timedelta(minutes=30),
        chair="1",
        supervising_clinician=staff["anesthesiologist"],
        escort_confirmed=True,
        escort_details="Partner",
        checked_in_at=dose_at - timedelta(minutes=20),
        checked_in_by=nurse,
        dose_started_at=dose_at,
        created_by=nurse,
    )


def _python_verdict(session: TreatmentSession) -> str:
    """'' when every consent the version requires is valid at the dose start, else the first
    kind that is not and its status, as the start gate reads them (SPEC §P4, §G3)."""
    summary = {
        item.kind.value: item
        for item in patient_consent_summary(patient=session.patient, at=session.dose_started_at)
    }
    for kind in session.rules.consent_kinds:
        status = summary[kind].status
        if status != ConsentStatus.VALID:
            return f"{ConsentKind(kind).label}: {SQL_TEXT[status]}"
    return ""


def _sql_verdict(session: TreatmentSession) -> str:
    site = session.site
    day = session.dose_started_at.astimezone(site.tzinfo).date()
    scope = Scope(
        site=site,
        start=day - timedelta(days=1),
        end=day + timedelta(days=1),
        now=session.dose_started_at + timedelta(days=1),
    )
    figure = FIGURES["consent-at-dosing"]
    (row,) = figure_rows(figure, scope, load_rule_book()).filter(pk=session.pk)
    if row.ok:
        assert row.reason == "", row.reason
        return ""
    assert row.reason, "a violation without a reason"
    return row.reason


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds())
def test_p4_c5_consent_status_python_and_sql_agree_at_the_dose_start(
    world, staff, versions, time_machine
):
    """SPEC §P4 (valid / withdrawn / superseded / expired on the home-site calendar) and §C5
    ("sessions with valid consent at dosing"): the same verdict and reason per session."""
    with transaction.atomic():
        session = _build(world, staff, versions, time_machine)

        python, sql = _python_verdict(session), _sql_verdict(session)
        event(f"python verdict: {python or 'met'}")  # --hypothesis-show-statistics

        transaction.set_rollback(True)
    assert sql == python, world


# --- The edges, one by one, so a regression names its case ---------------------------------


def _one_consent(staff, versions, time_machine, *, zone, local, **consent) -> TreatmentSession:
    dose_at = local.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    world = World(
        zone=zone,
        version="iv",
        dose_at=dose_at,
        templates=(TemplateSpec(KETAMINE, 1, timedelta(days=-400), False, 365),),
        consents=(ConsentSpec(template=0, **consent),),
    )
    return _build(world, staff, versions, time_machine)


@pytest.mark.parametrize("zone", ["Europe/London", "America/New_York"])
@pytest.mark.parametrize(
    ("local", "valid_until", "expected"),
    [
        # Valid until the day before / the day of / the day after the dose, the dose at the
        # first and the last instant of its home-site day, on the spring DST change.
        (datetime(2025, 3, 30, 0, 0), -1, "Ketamine treatment (off-label): expired"),
        (datetime(2025, 3, 30, 0, 0), 0, ""),
        (datetime(2025, 3, 30, 23, 59, 59, 999_999), 0, ""),
        (datetime(2025, 3, 9, 23, 59, 59, 999_999), 0, ""),
        (datetime(2025, 3, 9, 0, 0), -1, "Ketamine treatment (off-label): expired"),
        (datetime(2025, 11, 2, 0, 0), 1, ""),
    ],
)
def test_p4_c5_expiry_is_judged_alike_at_the_edges_of_the_home_site_day(
    staff, versions, time_machine, zone, local, valid_until, expected
):
    session = _one_consent(
        staff,
        versions,
        time_machine,
        zone=zone,
        local=local,
        signed=timedelta(days=-10),
        valid_until=valid_until,
        withdrawn=None,
    )

    assert _python_verdict(session) == expected
    assert _sql_verdict(session) == expected


@pytest.mark.parametrize(
    ("withdrawn", "expected"),
    [
        (timedelta(microseconds=-1), "Ketamine treatment (off-label): withdrawn"),
        (timedelta(0), "Ketamine treatment (off-label): withdrawn"),
        (timedelta(microseconds=1), ""),
    ],
)
def test_p4_c5_a_withdrawal_at_just_before_and_after_the_dose_is_judged_alike(
    staff, versions, time_machine, withdrawn, expected
):
    session = _one_consent(
        staff,
        versions,
        time_machine,
        zone="Europe/London",
        local=datetime(2025, 6, 15, 10, 0),
        signed=timedelta(days=-10),
        valid_until=None,
        withdrawn=withdrawn,
    )

    assert _python_verdict(session) == expected
    assert _sql_verdict(session) == expected


@pytest.mark.parametrize(
    ("signed", "expected"),
    [
        (timedelta(microseconds=-1), ""),
        (timedelta(0), ""),
        (timedelta(microseconds=1), "Ketamine treatment (off-label): not signed"),
    ],
)
def test_p4_c5_a_consent_signed_at_just_before_and_after_the_dose_is_judged_alike(
    staff, versions, time_machine, signed, expected
):
    session = _one_consent(
        staff,
        versions,
        time_machine,
        zone="America/New_York",
        local=datetime(2025, 11, 2, 1, 30),
        signed=signed,
        valid_until=None,
        withdrawn=None,
    )

    assert _python_verdict(session) == expected
    assert _sql_verdict(session) == expected


SUPERSEDED = "Ketamine treatment (off-label): superseded, re-consent needed"


@pytest.mark.parametrize(
    ("published", "requires_reconsent", "expected"),
    [
        (timedelta(microseconds=-1), True, SUPERSEDED),
        (timedelta(0), True, SUPERSEDED),
        (timedelta(microseconds=1), True, ""),
        (timedelta(days=-1), False, ""),
        (None, True, ""),
    ],
)
def test_p4_c5_a_reconsent_version_published_around_the_dose_is_judged_alike(
    staff, versions, time_machine, published, requires_reconsent, expected
):
    dose_at = datetime(2025, 6, 15, 9, 0, tzinfo=UTC)
    world = World(
        zone="Europe/London",
        version="iv",
        dose_at=dose_at,
        templates=(
            TemplateSpec(KETAMINE, 1, timedelta(days=-400), False, 365),
            TemplateSpec(KETAMINE, 2, published, requires_reconsent, 365),
        ),
        consents=(ConsentSpec(0, timedelta(days=-30), None, None),),
    )
    session = _build(world, staff, versions, time_machine)

    assert _python_verdict(session) == expected
    assert _sql_verdict(session) == expected
