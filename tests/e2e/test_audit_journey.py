"""An administrator audits a site through the browser (SPEC §C3–C6): the compliance dashboard,
a violation drilled down to its session, the session's audit trail, and its CSV export.

The violation is built directly with explicit times (tests/compliance/builders.py), as in the
compliance tests: a session dosed two days ago whose 10-minute check was never recorded.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from audit.models import AccessLog, AuditEvent
from protocols.models import Protocol
from tests.compliance.builders import SessionBuilder, course
from tests.e2e.test_nurse_journey import log_in
from tests.factories import PatientFactory

pytestmark = pytest.mark.e2e


@pytest.fixture
def missed_check_session(site, nurse, psychiatrist, anesthesiologist):
    version = Protocol.objects.get(slug="iv-ketamine").versions.published().latest("version")
    patient = PatientFactory(home_site=site, mrn="AUD-0001", created_by=nurse)
    treatment = course(patient, version, psychiatrist=psychiatrist, nurse=nurse)
    built = SessionBuilder(
        treatment,
        timezone.now() - timedelta(days=2),
        supervisor=anesthesiologist,
        nurse=nurse,
    )
    built.reading(0)
    built.check(0, satisfied_minute=0)
    missed = built.check(10)  # no reading near minute 10: missed
    built.reading(60)
    session = built.discharge(120)
    return session, missed


def test_an_administrator_drills_from_a_violation_to_the_sessions_audit_trail_and_exports_it(
    page: Page, live_server, site, administrator, missed_check_session, screenshot, tmp_path
):
    session, missed = missed_check_session
    log_in(page, live_server, administrator)

    # The dashboard, from the navigation: the current site and the last 28 days.
    page.get_by_role("navigation", name="Main navigation").get_by_role(
        "link", name="Compliance"
    ).click()
    expect(page.get_by_role("heading", name="Compliance", exact=True)).to_be_visible()
    screenshot("audit-01-compliance-dashboard")

    # The checks figure counts the missed check; its violations button drills down.
    # (Chromium names the button "1 violation : <figure>": the hidden text is its own box.)
    page.get_by_role(
        "link", name=re.compile(r"^1 violation\s*: Required checks recorded on time$")
    ).click()
    row = page.get_by_test_id(f"row-{missed.pk}")
    expect(row).to_contain_text("violation")
    expect(row).to_contain_text("AUD-0001")
    screenshot("audit-02-violation-list")

    # From the violation to its session.
    row.get_by_role("link", name=f"Check: {missed.label} #{missed.pk}", exact=True).click()
    expect(page).to_have_url(f"{live_server.url}/sessions/{session.pk}/#checks", ignore_case=False)
    expect(page.get_by_role("heading", level=1)).to_contain_text("chair 1")
    screenshot("audit-03-session")

    # The session's audit trail: its own changes and its children's, each a chain link.
    page.get_by_test_id("session-audit-trail").click()
    expect(
        page.get_by_role("heading", name=f"Audit trail of treatment session #{session.pk}")
    ).to_be_visible()
    events = page.get_by_test_id("audit-events")
    expect(events).to_contain_text(f"Required check #{missed.pk}")
    expect(events).to_contain_text("Session")  # the administrator's own view, logged
    expect(events).to_contain_text("Viewed")
    screenshot("audit-04-session-audit-trail")

    # Export it: a CSV download, itself logged.
    with page.expect_download() as download_info:
        page.get_by_test_id("record-audit-export").click()
    download = download_info.value
    assert download.suggested_filename.startswith(f"vigil-audit-treatmentsession-{session.pk}-")
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["occurred at (UTC)", "action", "staff member"]
    trail = (
        AuditEvent.objects.filter(
            object_type="monitoring.treatmentsession", object_id=str(session.pk)
        ).count()
        + AuditEvent.objects.filter(
            object_type="monitoring.requiredcheck", object_id=str(missed.pk)
        ).count()
    )
    assert len(body) >= trail
    assert any(r[4] == "monitoring.requiredcheck" and r[5] == str(missed.pk) for r in body)
    assert any(r[1] == "Viewed" and r[2] == administrator.username for r in body)
    exports = AccessLog.objects.filter(user=administrator, action=AccessLog.Action.EXPORT)
    assert [(e.object_type, e.object_id) for e in exports] == [
        ("monitoring.treatmentsession", str(session.pk))
    ]
    # The list page and the session page were logged as views too.
    seen = set(
        AccessLog.objects.filter(user=administrator, action=AccessLog.Action.VIEW).values_list(
            "what", flat=True
        )
    )
    assert {"Session", "Audit trail of a record"} <= seen
