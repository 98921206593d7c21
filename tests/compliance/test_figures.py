"""Every figure of the dashboard against the hand-counted world of conftest.py (SPEC §C5)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.urls import reverse

from compliance.selectors import (
    FIGURES,
    Scope,
    compliance_dashboard,
    figure_rows,
    figure_totals,
    figure_trend,
    load_rule_book,
    median_acknowledgement,
)
from tests.compliance.conftest import NOW, RANGE

pytestmark = pytest.mark.django_db


def _scope(world) -> Scope:
    return Scope(site=world.site, start=date(2025, 3, 3), end=date(2025, 3, 16), now=NOW)


@pytest.mark.parametrize("slug", list(FIGURES))
def test_each_figure_counts_exactly_the_hand_counted_records(world, slug):
    figure, scope, book = FIGURES[slug], _scope(world), load_rule_book()
    expected = world.rows[slug]

    totals = figure_totals(figure, scope, book)

    assert (totals.compliant, totals.total) == (
        len(expected["ok"]),
        len(expected["ok"]) + len(expected["violations"]),
    )


@pytest.mark.parametrize("slug", list(FIGURES))
def test_each_list_holds_exactly_the_records_behind_its_figure(world, slug):
    figure, scope, book = FIGURES[slug], _scope(world), load_rule_book()
    expected = world.rows[slug]

    rows = list(figure_rows(figure, scope, book))
    violations = list(figure_rows(figure, scope, book, violations_only=True))

    assert {r.pk for r in rows if r.ok} == expected["ok"]
    assert {r.pk for r in rows if not r.ok} == expected["violations"]
    assert len(rows) == len({r.pk for r in rows})
    # Violations first, then the compliant ones.
    assert [r.ok for r in rows] == sorted(r.ok for r in rows)
    assert {r.pk for r in violations} == expected["violations"]


@pytest.mark.parametrize("slug", list(FIGURES))
def test_each_violation_names_its_reason(world, slug):
    figure, scope, book = FIGURES[slug], _scope(world), load_rule_book()

    rows = list(figure_rows(figure, scope, book))

    for row in rows:
        wanted = world.reasons.get((slug, row.pk))
        if wanted is not None:
            assert row.reason == wanted, row.pk
        elif row.ok:
            assert row.reason in ("", None), row.pk
        else:
            assert row.reason, f"violation {row.pk} without a reason"


def test_the_median_time_to_acknowledge_is_computed_in_the_database(world):
    scope, book = _scope(world), load_rule_book()
    acknowledged = figure_totals(FIGURES["critical-alerts"], scope, book).compliant

    assert median_acknowledgement(scope, book, acknowledged=acknowledged) == world.median_ack
    # Odd counts take the middle row: the first three delays (1, 2, 6 min) have median 2.
    assert median_acknowledgement(scope, book, acknowledged=3) == timedelta(minutes=2)
    assert median_acknowledgement(scope, book, acknowledged=0) is None


def test_the_weekly_trend_counts_each_week_of_the_range(world):
    weeks = figure_trend(FIGURES["first-session-approval"], _scope(world), load_rule_book())

    assert [(w.starts, w.compliant, w.total) for w in weeks] == [
        (date(2025, 3, 3), 1, 4),
        (date(2025, 3, 10), 1, 2),
    ]
    assert [w.percent for w in weeks] == [25.0, 50.0]


def test_the_dashboard_names_the_latest_verification_run(world):
    board = compliance_dashboard(scope=_scope(world))

    assert board.last_run == world.latest_run
    assert board.median_ack == world.median_ack
    assert board.figures["signatures-invalid"].totals.total == 1


def test_the_dashboard_page_shows_every_figure_with_its_numbers(client, world, administrator):
    client.force_login(administrator)

    response = client.get(reverse("compliance:dashboard"), {"site": world.site.pk, **RANGE})

    assert response.status_code == 200
    page = response.content.decode()
    results = response.context["board"].figures
    for slug, expected in world.rows.items():
        totals = results[slug].totals
        assert totals.compliant == len(expected["ok"]), slug
        assert reverse("compliance:list", args=[slug]) in page
        assert reverse("compliance:export", args=[slug]) in page
    assert "Median time to acknowledge: <strong>4 min</strong>" in page
    assert 'data-testid="percent-first-session-approval">33.3 %' in page
    assert 'data-testid="percent-followups-overdue">12.5 % overdue' in page
    assert "Signatures last verified 18 Mar 2025 03:00 +0000" in page
    assert "Europe/London" in page
    assert 'id="compliance-trend-data"' in page


def test_a_clinic_never_verified_says_so(client, site, administrator):
    client.force_login(administrator)

    response = client.get(reverse("compliance:dashboard"))

    assert response.status_code == 200
    assert "Signatures never verified" in response.content.decode()


def test_the_range_defaults_to_the_last_28_days_of_the_site_calendar(
    client, site, administrator, time_machine
):
    time_machine.move_to(NOW, tick=False)
    client.force_login(administrator)

    response = client.get(reverse("compliance:dashboard"))

    scope = response.context["scope"]
    assert (scope.site, scope.start, scope.end) == (site, date(2025, 2, 21), date(2025, 3, 20))


def test_consent_expiry_is_judged_on_the_patients_home_site_calendar(
    other_site, versions, templates, administrator
):
    """Harbour is in New York: a dose at 03:00 UTC on 6 March is still 5 March there, the last
    valid day of the consent."""
    from tests.compliance import builders as b
    from tests.factories import PatientFactory, UserFactory

    staff = {"psychiatrist": UserFactory(sites=[other_site]), "nurse": administrator}
    patient = PatientFactory(home_site=other_site, created_by=administrator)
    b.consent(
        patient,
        templates.k1,
        b.at(1, 9, month=2),
        witness=administrator,
        valid_until=date(2025, 3, 5),
    )
    course = b.course(patient, versions.iv, **staff)
    valid = b.SessionBuilder(
        course, b.at(6, 3), supervisor=staff["psychiatrist"], nurse=administrator
    ).session
    expired = b.SessionBuilder(
        course, b.at(6, 6), supervisor=staff["psychiatrist"], nurse=administrator
    ).session
    scope = Scope(site=other_site, start=date(2025, 3, 1), end=date(2025, 3, 31), now=NOW)

    rows = {r.pk: r.ok for r in figure_rows(FIGURES["consent-at-dosing"], scope, load_rule_book())}

    assert rows == {valid.pk: True, expired.pk: False}
