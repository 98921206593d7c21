"""Every rule document the schema accepts plans and evaluates without error or hang (issue 10,
SPEC §G1 "rules as data", §M5, §M6).

Hypothesis draws 500+ valid documents (tests/clinical/strategies.py). For each, planning a
6-hour session — from the dose start, a planned or an actual infusion end, recovery checks run
until a discharge 6 hours later — finishes quickly with a bounded number of checks, and the
alert evaluator judges a run of readings against the document's thresholds and persistence
windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring.evaluation import (
    SESSION_HORIZON,
    baseline_values,
    evaluate_reading,
    plan_checks,
)
from protocols.rules import parse_rules
from tests.clinical.strategies import rule_documents

START = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # London's spring-forward night
SIX_HOURS = timedelta(hours=6)


@dataclass
class Reading:
    measured_at: datetime
    pk: int
    sbp: int | None = None
    dbp: int | None = None
    hr: int | None = None
    rr: int | None = None
    spo2: int | None = None
    temperature_c: float | None = None
    moaas: int | None = None
    is_predose: bool = False
    entered_in_error_at: None = None


readings = st.lists(
    st.fixed_dictionaries(
        {
            "sbp": st.integers(50, 300),
            "dbp": st.integers(20, 200),
            "hr": st.integers(20, 250),
            "rr": st.integers(4, 60),
            "spo2": st.integers(50, 100),
            "moaas": st.integers(0, 5),
            "minutes": st.integers(0, 360),
        }
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(document=rule_documents(), ended_after=st.integers(0, 240), values=readings)
def test_g1_every_accepted_document_plans_and_evaluates_within_a_second(
    document, ended_after, values
):
    rules = parse_rules(document)
    began = time.perf_counter()

    ended = START + timedelta(minutes=ended_after)
    for dose_ended_at in (None, ended):
        planned = plan_checks(
            rules, dose_started_at=START, dose_ended_at=dose_ended_at, until=START + SIX_HOURS
        )
        # Bounded: at most one occurrence per minute of the session day for each check.
        assert len(planned) <= len(rules.schedule) * (SESSION_HORIZON.total_seconds() // 60 + 1)
        for check in planned:
            assert check.due_at is None or START <= check.due_at <= START + SESSION_HORIZON
            assert check.window_minutes >= 0
            assert check.window_before_minutes >= 0

    session = [
        Reading(
            measured_at=START + timedelta(minutes=v["minutes"]),
            pk=n + 1,
            is_predose=n == 0,
            **{k: v[k] for k in ("sbp", "dbp", "hr", "rr", "spo2", "moaas")},
        )
        for n, v in enumerate(values)
    ]
    baseline = baseline_values([r for r in session if r.is_predose])
    for reading in session:
        raised = evaluate_reading(
            rules=rules.alerts, reading=reading, baseline=baseline, earlier=session
        )
        assert {a.level for a in raised} <= {"warning", "critical"}
        evaluate_reading(rules=rules.predose_alerts, reading=reading)

    assert time.perf_counter() - began < 1.0
