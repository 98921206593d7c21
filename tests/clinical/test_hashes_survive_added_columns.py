"""Signatures and audit links written before a column was added still verify (SPEC §S3, §C4).

Issue 10 added columns to signed and chained records (the C-SSRS time, the GAD-7 flag, the
age override, the pre-dose decision's reading, re-planned checks, the discharge agreement). A
clinic upgrading keeps years of signatures and hash-chained history rows written without them:
`verify_audit` and "signature invalid" must not call every one of them altered.
"""

from __future__ import annotations

import pytest

from audit.chain import chained_models, content_hash, row_values
from audit.models import AuditEvent
from clinic import signatures
from clinic.models import ADDED_LATER, Signature, without_unset_additions
from clinic.signatures import canonical_json
from protocols.models import Assessment

pytestmark = pytest.mark.django_db


def test_s3_c4_an_added_column_at_its_migration_default_is_not_hashed():
    values = {"id": 1, "gad7_evaluation_flag": False, "cssrs_administered_at": None, "x": 0}
    assert without_unset_additions("protocols_assessment", values) == {"id": 1, "x": 0}
    assert without_unset_additions("protocols_historicalassessment", values) == {"id": 1, "x": 0}
    kept = {**values, "gad7_evaluation_flag": True}
    assert without_unset_additions("protocols_assessment", kept)["gad7_evaluation_flag"] is True


def test_s3_a_signature_made_before_the_columns_existed_still_verifies(clinic):
    """A record signed by the old code, whose new columns the migration set to their defaults,
    has the same signed content as the old code computed without them: its signature verifies.
    A record signed now, using the columns, is covered by them."""
    course = clinic.course()
    assessment = Assessment.objects.get(course=course)
    signature = Signature.objects.get(object_id=assessment.pk, meaning="approved")
    assert assessment.cssrs_administered_at is not None
    assert "cssrs_administered_at" in assessment.signed_content()
    assert signatures.verify(signature, assessment)

    # The same row as the migration leaves an old one: the added columns at their defaults.
    assessment.cssrs_administered_at, assessment.gad7_evaluation_flag = None, False
    added = ADDED_LATER["protocols_assessment"]
    old_code_content = {
        f.attname: getattr(assessment, f.attname)
        for f in Assessment._meta.concrete_fields
        if f.attname not in {"id", "status", "locked_at", "signed_at", "created_at", *added}
    }
    assert canonical_json(assessment.signed_content()) == canonical_json(old_code_content)


def test_c4_history_rows_hash_without_added_columns_left_at_their_default(clinic):
    """A history row whose added columns hold their defaults hashes exactly as a row written
    before the columns existed; every link of the chain still matches its row."""
    session = clinic.checked_in(clinic.course())
    clinic.vitals(session, sbp=125, dbp=80, hr=70, rr=14, spo2=98)
    clinic.dose(session)
    checked = set()
    for model in chained_models():
        table = model._meta.db_table
        events = AuditEvent.objects.filter(source=model._meta.label_lower)
        if table not in ADDED_LATER or not events.exists():
            continue
        checked.add(table)
        stored = row_values(model, events.values_list("source_id", flat=True))
        for event in events:
            values = stored[int(event.source_id)]
            assert content_hash(values) == event.content_sha256
            columns = {f.column for f in model._meta.concrete_fields}
            for column in ADDED_LATER[table] & columns:
                if column in values:
                    assert values[column] not in (None, "", False, [], "[]")
    assert {
        "monitoring_historicaltreatmentsession",
        "monitoring_historicalrequiredcheck",
        "protocols_historicaltreatmentcourse",
        "protocols_historicalassessment",
    } <= checked


HASHED_SIGNED_MODELS = (
    "monitoring.TreatmentSession",
    "monitoring.DoseAdministration",
    "monitoring.VitalReading",
    "monitoring.Alert",
    "monitoring.RequiredCheck",
    "monitoring.Observation",
    "monitoring.Discharge",
    "protocols.Assessment",
)


def test_s3_c4_a_column_added_to_a_hashed_table_is_registered_as_added_later():
    """A tripwire for the next migration: every column of a chained or signed table is either
    one the hashes covered when this list was frozen (tests/clinical/hashed_columns.json), or
    is registered in clinic.models.ADDED_LATER so that rows written before it still verify."""
    import json
    from pathlib import Path

    from django.apps import apps

    frozen = json.loads((Path(__file__).parent / "hashed_columns.json").read_text())
    models = [*chained_models(), *(apps.get_model(label) for label in HASHED_SIGNED_MODELS)]
    for model in models:
        table = model._meta.db_table
        columns = {f.column for f in model._meta.concrete_fields}
        unregistered = columns - set(frozen.get(table, ())) - ADDED_LATER.get(table, set())
        assert not unregistered, (
            f"{table}: new column(s) {sorted(unregistered)} change the hash of every existing "
            "row; register them in clinic.models.ADDED_LATER (or keep them out of the hash)."
        )
