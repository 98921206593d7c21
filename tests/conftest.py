"""Shared fixtures: sites and one persona per role (SPEC §U), plus an outsider from another site."""

from __future__ import annotations

import pytest
from django.db.backends.base.operations import BaseDatabaseOperations

from audit.db import maintenance
from clinic.models import Role
from tests.factories import TEST_PASSWORD, PatientFactory, SiteFactory, UserFactory


def pytest_configure(config) -> None:
    # Transactional tests empty the database after each test; the audit tables refuse DELETE
    # and TRUNCATE (SPEC §C2) except under the maintenance switch, which only this uses.
    flush = BaseDatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        with maintenance(self.connection):
            return flush(self, sql_list)

    BaseDatabaseOperations.execute_sql_flush = execute_sql_flush


@pytest.fixture
def password() -> str:
    return TEST_PASSWORD


@pytest.fixture
def site(db):
    return SiteFactory(name="Northside", time_zone="Europe/London")


@pytest.fixture
def other_site(db):
    return SiteFactory(name="Harbour", time_zone="America/New_York")


def _persona(username: str, role: Role, site):
    return UserFactory(
        username=username, roles=[role], sites=[site], is_staff=role == Role.ADMINISTRATOR
    )


@pytest.fixture
def nurse(site):
    return _persona("nurse", Role.NURSE, site)


@pytest.fixture
def psychiatrist(site):
    return _persona("psychiatrist", Role.PSYCHIATRIST, site)


@pytest.fixture
def anesthesiologist(site):
    return _persona("anesthesiologist", Role.ANESTHESIOLOGIST, site)


@pytest.fixture
def gp(site):
    return _persona("gp", Role.GP, site)


@pytest.fixture
def administrator(site):
    return _persona("administrator", Role.ADMINISTRATOR, site)


@pytest.fixture
def outsider(other_site):
    """A nurse of another site: sees none of `site`'s patients."""
    return _persona("outsider", Role.NURSE, other_site)


@pytest.fixture
def patient(site, nurse):
    return PatientFactory(home_site=site, created_by=nurse)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Signing re-checks passwords; a fast hasher keeps the suite quick. Production uses PBKDF2.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
