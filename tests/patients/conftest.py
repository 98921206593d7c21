"""Fixtures shared by the patients tests: scans land in a temporary folder, never in media/."""

from __future__ import annotations

import pytest

from clinic.models import Role
from patients import services
from patients.models import ConsentKind, ConsentTemplate
from tests.factories import PatientFactory, UserFactory


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def ny_nurse(other_site):
    return UserFactory(username="ny-nurse", roles=[Role.NURSE], sites=[other_site])


@pytest.fixture
def ny_psychiatrist(other_site):
    return UserFactory(username="ny-psychiatrist", roles=[Role.PSYCHIATRIST], sites=[other_site])


@pytest.fixture
def ny_patient(other_site, ny_nurse):
    return PatientFactory(home_site=other_site, created_by=ny_nurse, mrn="H-0001")


@pytest.fixture
def publish_template(administrator):
    """Create and publish the next version of a consent kind, through the services."""

    def publish(
        kind: str = ConsentKind.KETAMINE_TREATMENT,
        *,
        validity_days: int = 365,
        requires_reconsent: bool = False,
        text: str | None = None,
    ) -> ConsentTemplate:
        template = services.consent_template_create(
            acting_user=administrator,
            kind=kind,
            title=f"{kind} consent",
            text=text or f"The full text of the {kind} consent.",
            validity_days=validity_days,
            requires_reconsent=requires_reconsent,
        )
        return services.consent_template_publish(template=template, acting_user=administrator)

    return publish


@pytest.fixture
def ketamine_template(publish_template):
    return publish_template(ConsentKind.KETAMINE_TREATMENT)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The personas are created with a password; PBKDF2 makes each one cost ~0.3 s.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
