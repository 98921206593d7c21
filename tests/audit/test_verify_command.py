"""`manage.py verify_audit` and its nightly task (SPEC §C4): the exit status, the stored run and
its findings, the administrators told of a failure; and simple-history's own commands, which
would rewrite or delete history, refused (SPEC §C2)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from celery.schedules import crontab
from django.conf import settings
from django.core.management import CommandError, call_command, get_commands
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from audit.chain import chained_models
from audit.models import AuditChain, AuditEvent, Finding, VerificationRun
from audit.tasks import verify_audit_nightly
from clinic.celery import app as celery_app
from clinic.models import Notification, Role, Signature
from monitoring import services as monitoring_services
from patients import services as patient_services
from patients.models import Patient
from protocols import services as protocol_services
from tests.factories import UserFactory

# Step 1's fixtures, reused: a signed assessment for the clean run to re-hash.
from tests.protocols.conftest import complete_draft, course, draft, iv_protocol, submitted

__all__ = ["complete_draft", "course", "draft", "iv_protocol", "submitted"]

pytestmark = pytest.mark.django_db

AUDIT_BROKEN = Notification.Kind.AUDIT_BROKEN


@pytest.fixture
def edited_patient(site, nurse) -> Patient:
    """A patient registered and then edited through the services: two linked history rows."""
    patient = patient_services.patient_register(
        site=site,
        acting_user=nurse,
        mrn="VER-0001",
        given_name="Nadia",
        family_name="Okafor",
        date_of_birth=date(1979, 6, 1),
        sex=Patient.Sex.FEMALE,
    )
    return patient_services.patient_update(patient=patient, acting_user=nurse, phone="0113 1")


def insert_unchained_history_rows(patient: Patient, count: int = 1) -> list[int]:
    """Copy the patient's latest history row with raw SQL, as someone bypassing the app would:
    appending is what the append-only triggers allow, so nothing stops it but verification."""
    model = Patient.history.model
    q = connection.ops.quote_name
    columns = ", ".join(q(f.column) for f in model._meta.concrete_fields if not f.primary_key)
    table = q(model._meta.db_table)
    latest = patient.history.order_by("-history_id").first().pk
    with connection.cursor() as cursor:
        for _ in range(count):
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} "  # noqa: S608
                "WHERE history_id = %s",
                [latest],
            )
    inserted = model.objects.order_by("-history_id").values_list("history_id", flat=True)
    return sorted(inserted[:count])


def run_verify(*args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", *args, stdout=out, stderr=err)
    except CommandError as error:
        return error.returncode, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def audit_broken_recipients() -> list[str]:
    return sorted(
        Notification.objects.filter(kind=AUDIT_BROKEN).values_list("recipient__username", flat=True)
    )


@pytest.fixture
def administrators(site, other_site, administrator) -> dict[str, object]:
    """Every kind of account an alert could wrongly reach, and the ones it must."""
    return {
        "administrator": administrator,
        "harbour-admin": UserFactory(
            username="harbour-admin", roles=[Role.ADMINISTRATOR], sites=[other_site]
        ),
        "retired-admin": UserFactory(
            username="retired-admin", roles=[Role.ADMINISTRATOR], sites=[site], is_active=False
        ),
        "robot-admin": UserFactory(
            username="robot-admin",
            roles=[Role.ADMINISTRATOR],
            sites=[site],
            is_service_account=True,
        ),
        "root": UserFactory(username="root", is_superuser=True, is_staff=True, sites=[site]),
    }


# --- A clean trail -----------------------------------------------------------------------------


def test_a_clean_trail_exits_0_and_keeps_a_successful_run(
    edited_patient, submitted, psychiatrist, password, administrators
):
    protocol_services.assessment_sign(
        assessment=submitted, signer=psychiatrist, password=password, approve=True
    )

    code, out, _err = run_verify()

    assert code == 0
    assert "Audit trail intact: no broken link." in out
    run = VerificationRun.objects.get()
    assert run.ok is True
    assert run.problems == 0
    assert run.first_break == ""
    assert run.triggered_by == "manage.py verify_audit"
    assert run.links == AuditEvent.objects.count() > 0
    assert run.chains == AuditChain.objects.count()
    assert run.signatures == Signature.objects.count() == 1
    assert run.started_at <= run.finished_at
    assert f"Checked {run.links} links in {run.chains} chains" in out
    assert not run.findings.exists()
    assert audit_broken_recipients() == []


def test_the_progress_bar_goes_to_stderr_and_the_verdict_to_stdout(edited_patient):
    _code, out, err = run_verify()

    total = AuditEvent.objects.count()
    assert f"100%  {total}/{total} links" in err
    assert "[" + "#" * 30 + "]" in err
    assert "%" not in out
    assert "#" not in out
    assert "intact" not in err


# --- A broken trail ----------------------------------------------------------------------------


def test_a_broken_trail_exits_1_and_keeps_the_run_with_its_findings(edited_patient):
    (inserted,) = insert_unchained_history_rows(edited_patient)

    code, out, _err = run_verify()

    assert code == 1
    run = VerificationRun.objects.get()
    assert run.ok is False
    assert run.problems == 1
    assert run.first_break == (
        f"Row outside any chain: outside chains (patients.historicalpatient #{inserted}): "
        "no link covers this row"
    )
    assert f"First broken link: {run.first_break}" in out
    (finding,) = run.findings.all()
    assert finding.kind == Finding.Kind.ROW_UNCHAINED
    assert (finding.source, finding.source_id) == ("patients.historicalpatient", inserted)
    assert finding.detail == "no link covers this row"


def test_the_command_error_counts_the_problems(edited_patient):
    insert_unchained_history_rows(edited_patient, count=2)

    with pytest.raises(CommandError, match=r"^2 problem\(s\) in the audit trail\.$") as error:
        call_command("verify_audit", stdout=StringIO(), stderr=StringIO())

    assert error.value.returncode == 1


def test_show_limits_the_problems_listed_but_every_finding_is_kept(edited_patient):
    inserted = insert_unchained_history_rows(edited_patient, count=4)

    _code, out, _err = run_verify("--show", "2")

    assert "First broken link: Row outside any chain: outside chains " in out
    assert f"patients.historicalpatient #{inserted[0]})" in out
    assert f"patients.historicalpatient #{inserted[1]})" in out
    assert f"patients.historicalpatient #{inserted[2]})" not in out
    assert "… and 2 more" in out
    assert Finding.objects.filter(run=VerificationRun.objects.get()).count() == 4


def test_a_failure_notifies_each_active_administrator_once(
    edited_patient, administrators, psychiatrist
):
    insert_unchained_history_rows(edited_patient)

    run_verify()

    run = VerificationRun.objects.get()
    assert audit_broken_recipients() == ["administrator", "harbour-admin"]
    for notification in Notification.objects.filter(kind=AUDIT_BROKEN):
        assert notification.url == reverse("audit:verification", args=[run.pk])
        assert notification.title == "Audit trail verification found 1 problem(s)"
        # Names the count, never a patient.
        assert edited_patient.family_name not in notification.title


def test_every_failed_run_notifies_again(edited_patient, administrators):
    insert_unchained_history_rows(edited_patient)

    run_verify()
    run_verify()

    first, second = VerificationRun.objects.order_by("id")
    assert (first.ok, second.ok) == (False, False)
    assert sorted(
        Notification.objects.filter(kind=AUDIT_BROKEN).values_list("recipient__username", "url")
    ) == sorted(
        (name, reverse("audit:verification", args=[run.pk]))
        for name in ("administrator", "harbour-admin")
        for run in (first, second)
    )


# --- The nightly task --------------------------------------------------------------------------


def test_the_nightly_task_returns_true_and_keeps_a_run_on_a_clean_trail(
    edited_patient, administrators
):
    assert verify_audit_nightly() is True

    run = VerificationRun.objects.get()
    assert run.ok is True
    assert run.triggered_by == "nightly task"
    assert audit_broken_recipients() == []


def test_the_nightly_task_returns_false_keeps_the_findings_and_notifies_on_a_broken_trail(
    edited_patient, administrators
):
    (inserted,) = insert_unchained_history_rows(edited_patient)

    result = verify_audit_nightly.apply()

    assert result.get() is False
    run = VerificationRun.objects.get()
    assert (run.ok, run.triggered_by, run.problems) == (False, "nightly task", 1)
    assert list(run.findings.values_list("source_id", flat=True)) == [inserted]
    assert audit_broken_recipients() == ["administrator", "harbour-admin"]


def test_beat_runs_the_verification_every_night():
    entry = settings.CELERY_BEAT_SCHEDULE["verify-audit"]

    assert entry["task"] == verify_audit_nightly.name == "audit.tasks.verify_audit_nightly"
    assert entry["task"] in celery_app.tasks
    schedule = entry["schedule"]
    assert isinstance(schedule, crontab)
    assert len(schedule.hour) == 1 and next(iter(schedule.hour)) < 6
    assert len(schedule.minute) == 1
    assert schedule.day_of_week == set(range(7))
    assert schedule.day_of_month == set(range(1, 32))


# --- simple-history's commands, refused --------------------------------------------------------


def history_counts() -> dict[str, int]:
    counts = {m._meta.label_lower: m._base_manager.count() for m in chained_models()}
    counts["audit.auditevent"] = AuditEvent.objects.count()
    return counts


REFUSED_COMMANDS = {
    "clean_old_history": ["--auto", "--days", "0"],
    "clean_duplicate_history": ["--auto"],
    "populate_history": ["--auto"],
    "populate_history-model": ["patients.Patient"],
}


@pytest.mark.parametrize("command", sorted(REFUSED_COMMANDS))
def test_simple_historys_commands_are_refused_and_touch_nothing(edited_patient, command):
    name = command.split("-")[0]
    before = history_counts()

    with pytest.raises(CommandError, match="append-only"):
        call_command(name, *REFUSED_COMMANDS[command], stdout=StringIO(), stderr=StringIO())

    assert get_commands()[name] == "audit"
    assert history_counts() == before


# --- The chains verify_audit walks ---------------------------------------------------------------


def receive_lot(site, nurse, lot_number: str) -> None:
    monitoring_services.lot_receive(
        site=site,
        acting_user=nurse,
        drug="ketamine",
        lot_number=lot_number,
        concentration_mg_per_ml=Decimal("10"),
        expires_on=timezone.localdate() + timedelta(days=365),
        received_mg=Decimal("100"),
    )


def lot_chain_keys() -> dict[str, str]:
    """Each lot's history row: the chain it is linked into, and the one its site and UTC day
    name."""
    return {
        event.object_id: (
            event.chain.key,
            f"site-{event.site_id}/{event.occurred_at.astimezone(UTC).date().isoformat()}",
        )
        for event in AuditEvent.objects.filter(source="monitoring.historicaldruglot")
    }


# Transactional: what matters is that each service call is its own transaction, as in a worker.
@pytest.mark.django_db(transaction=True)
def test_separate_transactions_at_two_sites_link_into_each_sites_chain(site, other_site, nurse):
    receive_lot(site, nurse, "NS-1")
    receive_lot(other_site, nurse, "HB-1")

    keys = lot_chain_keys()

    assert len(keys) == 2
    assert all(linked == expected for linked, expected in keys.values()), keys
    assert {linked.split("/")[0] for linked, _ in keys.values()} == {
        f"site-{site.pk}",
        f"site-{other_site.pk}",
    }


@pytest.mark.django_db(transaction=True)
def test_a_transaction_after_midnight_utc_links_into_the_new_days_chain(site, nurse, time_machine):
    time_machine.move_to(datetime(2026, 3, 9, 23, 59, 30, tzinfo=UTC), tick=False)
    receive_lot(site, nurse, "NS-1")
    time_machine.move_to(datetime(2026, 3, 10, 0, 0, 30, tzinfo=UTC), tick=False)
    receive_lot(site, nurse, "NS-2")

    keys = lot_chain_keys()

    assert sorted(linked for linked, _ in keys.values()) == [
        f"site-{site.pk}/2026-03-09",
        f"site-{site.pk}/2026-03-10",
    ]
    assert all(linked == expected for linked, expected in keys.values()), keys
