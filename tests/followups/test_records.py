"""The follow-up record after migration 0004 (SPEC §S3, §C1, §C4): the lock trigger survived the
table rebuild, and the fields added later stay out of the history rows and the signed content,
so that signatures and audit links made before them still verify."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from clinic import signatures
from followups import services
from followups.models import FollowUp
from protocols import instruments
from tests.followups.helpers import open_followup

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_review(approved_course, psychiatrist, password, time_machine) -> FollowUp:
    time_machine.move_to(timezone.now(), tick=False)
    rules = approved_course.protocol_version.parsed
    rule = next(r for r in rules.followups if r.signed_by_psychiatrist)
    review = open_followup(approved_course, rule, due_at=timezone.now(), assigned_to=psychiatrist)
    return services.followup_complete(
        followup=review,
        acting_user=psychiatrist,
        password=password,
        contact_method="video",
        outcome="Responding.",
        phq9_items=[0] * len(instruments.PHQ9.items),
        gad7_items=[3, 3, 3, 3, 0, 0, 0],
        cssrs_answers={"q1": False, "q2": False, "q6": False},
    )


def test_s3_the_database_still_refuses_changes_to_a_signed_follow_up(signed_review):
    assert signed_review.locked_at is not None

    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE followups_followup SET outcome = %s WHERE id = %s",
            ["changed behind the application", signed_review.pk],
        )


def test_s_c4_fields_added_later_are_neither_signed_nor_in_the_history(signed_review):
    assert signed_review.gad7_evaluation_flag  # GAD-7 12: stored with the review
    (state,) = signatures.signatures_for(signed_review)
    assert state.is_valid

    content = signed_review.signed_content()
    history_fields = {f.name for f in FollowUp.history.model._meta.fields}
    for name in FollowUp.LATER_FIELDS:
        assert name not in content
        assert name not in history_fields
    # What they derive from is signed and tracked.
    assert content["gad7_total"] == signed_review.gad7_total
    assert "gad7_total" in history_fields
