"""Two staff members writing the same thing at the same moment (SPEC §N5: no server error).

Each test holds the first writer inside its transaction, lets the second one start, then
releases the first. SQLite serializes writers (BEGIN IMMEDIATE), so it is correct by
construction there; PostgreSQL runs the two transactions side by side.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connections

from patients import services
from patients.models import ConsentKind, ConsentTemplate, Patient

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 10  # seconds: a bound for a stuck test, never reached when all is well


class Writer(threading.Thread):
    def __init__(self, name: str, work: Callable[[], Any]):
        super().__init__(name=name, daemon=True)
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            connections.close_all()


def hold_first_writer(monkeypatch, model, *, after_clean: bool):
    """Make the thread named 'first' pause in `model.full_clean` until released."""
    holding, release = threading.Event(), threading.Event()
    original = model.full_clean

    def full_clean(self, *args, **kwargs):
        if threading.current_thread().name == "first" and not after_clean:
            holding.set()
            release.wait(WAIT)
        result = original(self, *args, **kwargs)
        if threading.current_thread().name == "first" and after_clean:
            holding.set()
            release.wait(WAIT)
        return result

    monkeypatch.setattr(model, "full_clean", full_clean)
    return holding, release


def race(first: Writer, second: Writer, holding, release) -> None:
    first.start()
    assert holding.wait(WAIT), "the first writer never reached its pause"
    second.start()
    second.join(timeout=1)  # PostgreSQL: done, or blocked on a lock; SQLite: blocked
    release.set()
    first.join(WAIT)
    second.join(WAIT)
    assert not first.is_alive()
    assert not second.is_alive()


def test_two_administrators_creating_versions_at_once_get_consecutive_numbers(
    administrator, monkeypatch, request
):
    services.consent_template_create(
        acting_user=administrator, kind=ConsentKind.DATA_SHARING, title="v1", text="v1"
    )
    holding, release = hold_first_writer(monkeypatch, ConsentTemplate, after_clean=False)

    def create(title):
        return lambda: services.consent_template_create(
            acting_user=administrator, kind=ConsentKind.DATA_SHARING, title=title, text=title
        )

    first, second = Writer("first", create("A")), Writer("second", create("B"))
    race(first, second, holding, release)

    assert first.error is None, repr(first.error)
    assert second.error is None, repr(second.error)
    versions = sorted(
        ConsentTemplate.objects.filter(kind=ConsentKind.DATA_SHARING).values_list(
            "version", flat=True
        )
    )
    assert versions == [1, 2, 3]


def test_two_registrations_of_one_record_number_at_once_save_one_and_refuse_the_other(
    nurse, psychiatrist, site, monkeypatch, request
):
    holding, release = hold_first_writer(monkeypatch, Patient, after_clean=True)

    def register(user):
        return lambda: services.patient_register(
            site=site,
            acting_user=user,
            mrn="N-4242",
            given_name="Amelia",
            family_name="Hughes",
            date_of_birth="1984-03-02",
            sex=Patient.Sex.FEMALE,
        )

    first, second = Writer("first", register(nurse)), Writer("second", register(psychiatrist))
    race(first, second, holding, release)

    assert Patient.objects.filter(home_site=site, mrn="N-4242").count() == 1
    outcomes = sorted(type(writer.error).__name__ for writer in (first, second))
    assert outcomes == ["NoneType", "ValidationError"], (first.error, second.error)
    loser = first if first.error else second
    assert isinstance(loser.error, ValidationError)
