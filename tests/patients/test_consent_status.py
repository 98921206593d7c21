"""Consent status at its boundaries (SPEC §P4): expiry on the site's calendar, withdrawal,
supersession by a re-consent version, required versions, and the per-kind summary."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse

from patients import services
from patients.models import ConsentKind, ConsentRecord
from patients.selectors import ConsentStatus, consent_status, patient_consent_summary

pytestmark = pytest.mark.django_db

NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
SECOND = timedelta(seconds=1)


def record(patient, template, acting_user, signed_at, **kwargs) -> ConsentRecord:
    """Record a consent the way the web form does, with the clock at the signing moment."""
    with time_machine.travel(signed_at, tick=False):
        return services.consent_record(
            patient=patient,
            template=template,
            acting_user=acting_user,
            signature_method=ConsentRecord.SignatureMethod.TABLET,
            signed_at=signed_at,
            **kwargs,
        )


def status_at(consent: ConsentRecord, moment: datetime, **kwargs) -> ConsentStatus:
    """The status as the application sees it when the clock reads `moment`."""
    consent = ConsentRecord.objects.select_related("template", "patient__home_site").get(
        pk=consent.pk
    )
    with time_machine.travel(moment, tick=False):
        return consent_status(consent=consent, **kwargs)


# --- Expiry on the home site's calendar -------------------------------------------------------


@pytest.mark.parametrize(
    "signed_local",
    [
        datetime(2025, 6, 1, 14, 0, tzinfo=NEW_YORK),  # summer (EDT, UTC-4)
        datetime(2025, 1, 10, 9, 0, tzinfo=NEW_YORK),  # winter (EST, UTC-5)
    ],
    ids=["edt", "est"],
)
def test_consent_stays_valid_through_the_last_local_day_at_a_new_york_site(
    ny_patient, ny_nurse, publish_template, signed_local
):
    with time_machine.travel(signed_local - timedelta(days=1), tick=False):
        template = publish_template(validity_days=365)
    consent = record(ny_patient, template, ny_nurse, signed_local)
    last_day = consent.valid_until
    last_minute = datetime.combine(last_day, datetime.min.time(), NEW_YORK) + timedelta(
        hours=23, minutes=59, seconds=59
    )
    # In UTC this moment is already the next day: a UTC calendar would call it expired.
    assert last_minute.astimezone(UTC).date() == last_day + timedelta(days=1)

    assert status_at(consent, last_minute) == ConsentStatus.VALID


@pytest.mark.parametrize(
    "signed_local",
    [
        datetime(2025, 6, 1, 14, 0, tzinfo=NEW_YORK),
        datetime(2025, 1, 10, 9, 0, tzinfo=NEW_YORK),
    ],
    ids=["edt", "est"],
)
def test_consent_expires_in_the_first_minute_of_the_next_local_day_at_a_new_york_site(
    ny_patient, ny_nurse, publish_template, signed_local
):
    with time_machine.travel(signed_local - timedelta(days=1), tick=False):
        template = publish_template(validity_days=365)
    consent = record(ny_patient, template, ny_nurse, signed_local)
    next_day = consent.valid_until + timedelta(days=1)
    midnight = datetime.combine(next_day, datetime.min.time(), NEW_YORK)

    assert status_at(consent, midnight - SECOND) == ConsentStatus.VALID
    assert status_at(consent, midnight) == ConsentStatus.EXPIRED
    assert status_at(consent, midnight + timedelta(minutes=1)) == ConsentStatus.EXPIRED


def test_consent_expires_at_local_midnight_at_a_london_site_while_utc_is_still_on_the_last_day(
    site, nurse, patient, publish_template
):
    with time_machine.travel(datetime(2025, 6, 30, 12, tzinfo=UTC), tick=False):
        template = publish_template(validity_days=30)
    consent = record(patient, template, nurse, datetime(2025, 7, 1, 10, 0, tzinfo=LONDON))
    assert consent.valid_until == date(2025, 7, 30)
    midnight = datetime(2025, 7, 31, 0, 0, tzinfo=LONDON)  # 23:00 UTC on 30 July
    assert midnight.astimezone(UTC).date() == date(2025, 7, 30)

    assert status_at(consent, midnight - SECOND) == ConsentStatus.VALID
    assert status_at(consent, midnight) == ConsentStatus.EXPIRED


# --- Withdrawal -------------------------------------------------------------------------------


def test_withdrawal_takes_effect_at_the_moment_it_is_recorded(
    patient, nurse, psychiatrist, ketamine_template
):
    signed = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    consent = record(patient, ketamine_template, nurse, signed)
    withdrawn_at = datetime(2026, 3, 20, 15, 30, 0, tzinfo=UTC)
    with time_machine.travel(withdrawn_at, tick=False):
        consent = services.consent_withdraw(
            consent=consent, acting_user=psychiatrist, reason="Patient changed their mind."
        )
        # Immediate: the same instant already reads withdrawn.
        assert consent_status(consent=consent) == ConsentStatus.WITHDRAWN
    assert consent.withdrawn_at == withdrawn_at

    assert status_at(consent, withdrawn_at - SECOND) == ConsentStatus.VALID
    assert status_at(consent, withdrawn_at) == ConsentStatus.WITHDRAWN
    assert status_at(consent, withdrawn_at + timedelta(days=1)) == ConsentStatus.WITHDRAWN


def test_withdrawal_wins_over_expiry(patient, nurse, publish_template):
    with time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        template = publish_template(validity_days=10)
    consent = record(patient, template, nurse, datetime(2026, 1, 2, 9, tzinfo=UTC))
    with time_machine.travel(datetime(2026, 1, 5, tzinfo=UTC), tick=False):
        services.consent_withdraw(consent=consent, acting_user=nurse, reason="Stopped.")

    assert status_at(consent, datetime(2026, 2, 1, tzinfo=UTC)) == ConsentStatus.WITHDRAWN


# --- Supersession by a newer version -----------------------------------------------------------


def test_publishing_a_reconsent_version_supersedes_older_consents_from_its_publication(
    patient, nurse, administrator, publish_template
):
    with time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        version_1 = publish_template(ConsentKind.KETAMINE_TREATMENT)
    consent = record(patient, version_1, nurse, datetime(2026, 1, 2, 9, tzinfo=UTC))
    published_at = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
    with time_machine.travel(published_at - timedelta(days=3), tick=False):
        draft = services.consent_template_create(
            acting_user=administrator,
            kind=ConsentKind.KETAMINE_TREATMENT,
            title="Ketamine consent (revised risks)",
            text="Revised text.",
            requires_reconsent=True,
        )
    # A draft, even one that requires re-consent, changes nothing.
    assert status_at(consent, published_at - SECOND) == ConsentStatus.VALID
    with time_machine.travel(published_at, tick=False):
        services.consent_template_publish(template=draft, acting_user=administrator)

    assert status_at(consent, published_at - SECOND) == ConsentStatus.VALID
    assert status_at(consent, published_at) == ConsentStatus.SUPERSEDED
    assert status_at(consent, published_at + timedelta(days=30)) == ConsentStatus.SUPERSEDED


def test_a_consent_to_the_reconsent_version_itself_stays_valid(patient, nurse, publish_template):
    with time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        publish_template(ConsentKind.KETAMINE_TREATMENT)
        version_2 = publish_template(ConsentKind.KETAMINE_TREATMENT, requires_reconsent=True)
    consent = record(patient, version_2, nurse, datetime(2026, 1, 2, 9, tzinfo=UTC))

    assert status_at(consent, datetime(2026, 3, 1, tzinfo=UTC)) == ConsentStatus.VALID


def test_publishing_a_newer_version_without_reconsent_leaves_older_consents_valid(
    patient, nurse, publish_template
):
    with time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        version_1 = publish_template(ConsentKind.KETAMINE_TREATMENT)
    consent = record(patient, version_1, nurse, datetime(2026, 1, 2, 9, tzinfo=UTC))
    with time_machine.travel(datetime(2026, 2, 1, tzinfo=UTC), tick=False):
        version_2 = publish_template(ConsentKind.KETAMINE_TREATMENT, requires_reconsent=False)
    assert version_2.version == 2

    assert status_at(consent, datetime(2026, 3, 1, tzinfo=UTC)) == ConsentStatus.VALID


def test_a_later_version_without_reconsent_does_not_lift_an_earlier_supersession(
    patient, nurse, publish_template
):
    with time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        version_1 = publish_template(ConsentKind.KETAMINE_TREATMENT)
    old = record(patient, version_1, nurse, datetime(2026, 1, 2, 9, tzinfo=UTC))
    with time_machine.travel(datetime(2026, 2, 1, tzinfo=UTC), tick=False):
        version_2 = publish_template(ConsentKind.KETAMINE_TREATMENT, requires_reconsent=True)
    middle = record(patient, version_2, nurse, datetime(2026, 2, 2, 9, tzinfo=UTC))
    with time_machine.travel(datetime(2026, 3, 1, tzinfo=UTC), tick=False):
        publish_template(ConsentKind.KETAMINE_TREATMENT, requires_reconsent=False)

    later = datetime(2026, 4, 1, tzinfo=UTC)
    assert status_at(old, later) == ConsentStatus.SUPERSEDED
    assert status_at(middle, later) == ConsentStatus.VALID


def test_a_reconsent_version_of_another_kind_supersedes_nothing_here(
    patient, nurse, publish_template
):
    with time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        ketamine = publish_template(ConsentKind.KETAMINE_TREATMENT)
    consent = record(patient, ketamine, nurse, datetime(2026, 1, 2, 9, tzinfo=UTC))
    with time_machine.travel(datetime(2026, 2, 1, tzinfo=UTC), tick=False):
        publish_template(ConsentKind.DATA_SHARING)
        publish_template(ConsentKind.DATA_SHARING, requires_reconsent=True)

    assert status_at(consent, datetime(2026, 3, 1, tzinfo=UTC)) == ConsentStatus.VALID


# --- The version a protocol requires ----------------------------------------------------------


def test_required_version_makes_an_older_version_superseded_and_accepts_it_or_newer(
    patient, nurse, publish_template
):
    with time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        version_1 = publish_template(ConsentKind.KETAMINE_TREATMENT)
        version_2 = publish_template(ConsentKind.KETAMINE_TREATMENT)
        version_3 = publish_template(ConsentKind.KETAMINE_TREATMENT)
    signed = datetime(2026, 1, 2, 9, tzinfo=UTC)
    at = datetime(2026, 1, 10, tzinfo=UTC)
    on_1 = record(patient, version_1, nurse, signed)
    on_2 = record(patient, version_2, nurse, signed)
    on_3 = record(patient, version_3, nurse, signed)

    assert status_at(on_1, at, required_version=2) == ConsentStatus.SUPERSEDED
    assert status_at(on_2, at, required_version=2) == ConsentStatus.VALID
    assert status_at(on_3, at, required_version=2) == ConsentStatus.VALID
    assert status_at(on_1, at, required_version=1) == ConsentStatus.VALID
    assert status_at(on_1, at, required_version=None) == ConsentStatus.VALID


# --- Signing time -----------------------------------------------------------------------------


def test_a_consent_signed_after_the_moment_asked_about_counts_as_not_signed(
    patient, nurse, ketamine_template
):
    signed = datetime(2026, 5, 4, 10, 15, tzinfo=UTC)
    consent = record(patient, ketamine_template, nurse, signed)

    assert status_at(consent, signed - SECOND) == ConsentStatus.NOT_SIGNED
    assert status_at(consent, signed) == ConsentStatus.VALID
    # `at` given explicitly wins over the clock.
    with time_machine.travel(signed + timedelta(days=1), tick=False):
        assert consent_status(consent=consent, at=signed - SECOND) == ConsentStatus.NOT_SIGNED


# --- Per-kind summary -------------------------------------------------------------------------


def test_the_summary_judges_each_kind_on_its_latest_consent_and_reports_unsigned_kinds(
    patient, nurse, psychiatrist, publish_template
):
    with time_machine.travel(datetime(2025, 1, 1, tzinfo=UTC), tick=False):
        ketamine = publish_template(ConsentKind.KETAMINE_TREATMENT)
        rems = publish_template(ConsentKind.ESKETAMINE_REMS, validity_days=30)
    old = record(patient, ketamine, nurse, datetime(2025, 2, 1, 9, tzinfo=UTC))
    with time_machine.travel(datetime(2025, 3, 1, tzinfo=UTC), tick=False):
        services.consent_withdraw(consent=old, acting_user=nurse, reason="Paused treatment.")
    newer = record(patient, ketamine, nurse, datetime(2025, 6, 1, 9, tzinfo=UTC))
    # Entered later but signed earlier (a paper consent typed in afterwards): not the latest.
    record(patient, ketamine, nurse, datetime(2025, 4, 1, 9, tzinfo=UTC))
    rems_consent = record(
        patient, rems, nurse, datetime(2025, 2, 1, 9, tzinfo=UTC), prescriber=psychiatrist
    )

    with time_machine.travel(datetime(2025, 7, 1, 12, tzinfo=UTC), tick=False):
        summary = {item.kind: item for item in patient_consent_summary(patient=patient)}

    assert list(summary) == list(ConsentKind)
    assert summary[ConsentKind.KETAMINE_TREATMENT].consent == newer
    assert summary[ConsentKind.KETAMINE_TREATMENT].status == ConsentStatus.VALID
    assert summary[ConsentKind.KETAMINE_TREATMENT].is_valid
    assert summary[ConsentKind.ESKETAMINE_REMS].consent == rems_consent
    assert summary[ConsentKind.ESKETAMINE_REMS].status == ConsentStatus.EXPIRED
    assert summary[ConsentKind.DATA_SHARING].consent is None
    assert summary[ConsentKind.DATA_SHARING].status == ConsentStatus.NOT_SIGNED
    assert not summary[ConsentKind.DATA_SHARING].is_valid


def test_the_summary_at_a_past_moment_ignores_consents_signed_after_it(
    patient, nurse, ketamine_template
):
    first = record(patient, ketamine_template, nurse, datetime(2026, 1, 5, 9, tzinfo=UTC))
    with time_machine.travel(datetime(2026, 1, 6, tzinfo=UTC), tick=False):
        services.consent_withdraw(consent=first, acting_user=nurse, reason="Withdrawn.")
    record(patient, ketamine_template, nurse, datetime(2026, 2, 1, 9, tzinfo=UTC))

    with time_machine.travel(datetime(2026, 3, 1, tzinfo=UTC), tick=False):
        then = patient_consent_summary(patient=patient, at=datetime(2026, 1, 20, tzinfo=UTC))
        now = patient_consent_summary(patient=patient)

    assert then[0].kind == ConsentKind.KETAMINE_TREATMENT
    assert then[0].consent == first
    assert then[0].status == ConsentStatus.WITHDRAWN
    assert now[0].status == ConsentStatus.VALID


def test_the_summary_reports_a_superseded_latest_consent(patient, nurse, publish_template):
    with time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        version_1 = publish_template(ConsentKind.KETAMINE_TREATMENT)
    record(patient, version_1, nurse, datetime(2026, 1, 2, 9, tzinfo=UTC))
    with time_machine.travel(datetime(2026, 2, 1, tzinfo=UTC), tick=False):
        publish_template(ConsentKind.KETAMINE_TREATMENT, requires_reconsent=True)
        summary = patient_consent_summary(patient=patient)

    assert summary[0].status == ConsentStatus.SUPERSEDED


# --- valid_until computed by the service ------------------------------------------------------


@pytest.mark.parametrize(
    ("signed_at", "validity_days", "expected_valid_until"),
    [
        # 03:00 UTC on 10 Jan is 22:00 on 9 Jan in New York: the local day counts.
        (datetime(2026, 1, 10, 3, 0, tzinfo=UTC), 365, date(2027, 1, 8)),
        (datetime(2026, 1, 10, 3, 0, tzinfo=UTC), 1, date(2026, 1, 9)),
        (datetime(2026, 1, 10, 12, 0, tzinfo=UTC), 1, date(2026, 1, 10)),
        # Leap day inside the period: days, not calendar years.
        (datetime(2027, 6, 1, 16, 0, tzinfo=UTC), 365, date(2028, 5, 30)),
    ],
)
def test_consent_record_computes_valid_until_from_the_local_signing_day(
    ny_patient, ny_nurse, publish_template, signed_at, validity_days, expected_valid_until
):
    with time_machine.travel(signed_at - timedelta(days=1), tick=False):
        template = publish_template(validity_days=validity_days)
    consent = record(ny_patient, template, ny_nurse, signed_at)

    signed_day = signed_at.astimezone(NEW_YORK).date()
    assert consent.valid_until == signed_day + timedelta(days=validity_days - 1)
    assert consent.valid_until == expected_valid_until


def test_a_one_day_consent_is_valid_only_on_its_local_signing_day(
    ny_patient, ny_nurse, publish_template
):
    signed_at = datetime(2026, 1, 10, 3, 0, tzinfo=UTC)  # 22:00 on 9 Jan in New York
    with time_machine.travel(signed_at - timedelta(days=1), tick=False):
        template = publish_template(validity_days=1)
    consent = record(ny_patient, template, ny_nurse, signed_at)

    assert status_at(consent, datetime(2026, 1, 9, 23, 59, tzinfo=NEW_YORK)) == (
        ConsentStatus.VALID
    )
    assert status_at(consent, datetime(2026, 1, 10, 0, 0, tzinfo=NEW_YORK)) == (
        ConsentStatus.EXPIRED
    )


def test_the_consent_form_reads_the_signing_time_in_the_site_time_zone(
    client, ny_nurse, ny_patient, publish_template
):
    with time_machine.travel(datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        template = publish_template(validity_days=365)
    client.force_login(ny_nurse)
    with time_machine.travel(datetime(2026, 1, 12, 12, tzinfo=UTC), tick=False):
        response = client.post(
            reverse("patients:consent_new", args=[ny_patient.pk]),
            {
                "template": template.pk,
                "signature_method": ConsentRecord.SignatureMethod.TABLET,
                "signed_at": "2026-01-09T22:00",
            },
        )
    assert response.status_code == 302, response.context["form"].errors
    consent = ConsentRecord.objects.get(patient=ny_patient)
    assert consent.signed_at == datetime(2026, 1, 10, 3, 0, tzinfo=UTC)
    assert consent.valid_until == date(2027, 1, 8)
