"""Who may complete or sign a follow-up is decided once (SPEC §U, §F2, §S; issue 10 "Discharge":
"Same for follow-up signing").

SPEC §U: nurses "complete follow-up calls"; psychiatrists "sign follow-up reviews"; GPs "record
physical-status follow-ups ... may NOT sign psychiatric scales"; anesthesiologists and
administrators do neither clinical kind (administrators file their own duties, SPEC §F6); every
check is "deny unless allowed", and a record outside the user's sites answers 404.

`followups.permissions.completion_refusal` (and `may_complete_followup`) is the one rule: for
every role and every kind of follow-up of the shipped plans, the service, the view and the page
must give the same answer as the rule.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone

from clinic.models import Role
from followups import services
from followups.models import FollowUp
from followups.permissions import (
    closing_refusal,
    completion_refusal,
    may_close_followup,
    may_complete_followup,
)
from protocols import instruments
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ROLES = [
    "nurse",
    "psychiatrist",
    "colleague",
    "gp",
    "anesthesiologist",
    "administrator",
    "outsider",
]
KINDS = ["next_day_call", "day7_review", "gp_day28", "rems_form"]
# Who SPEC §U lets complete each kind (the colleague: another psychiatrist of the site).
ALLOWED = {
    "next_day_call": {"nurse", "psychiatrist", "colleague"},
    "day7_review": {"psychiatrist", "colleague"},
    "gp_day28": {"gp", "psychiatrist", "colleague"},
    "rems_form": {"administrator"},
}
PHQ9 = [0] * len(instruments.PHQ9.items)
GAD7 = [0] * len(instruments.GAD7.items)


def service_values(kind: str) -> dict:
    values = {"contact_method": FollowUp.ContactMethod.PHONE, "outcome": "Done."}
    if kind == "day7_review":
        values.update(phq9_items=PHQ9, gad7_items=GAD7, contact_method="video")
    if kind == "gp_day28":
        values.update(contact_method="in-person", sbp=130, dbp=80)
    if kind == "rems_form":
        values.pop("contact_method")
    return values


def form_values(kind: str, password: str) -> dict:
    values = {"contact_method": "phone", "outcome": "Done.", "password": password}
    if kind == "day7_review":
        values["contact_method"] = "video"
        values.update({f"phq9_{i}": "0" for i in range(1, len(PHQ9) + 1)})
        values.update({f"gad7_{i}": "0" for i in range(1, len(GAD7) + 1)})
    if kind == "gp_day28":
        values.update(contact_method="in-person", sbp="130", dbp="80")
    if kind == "rems_form":
        values["contact_method"] = ""
    return values


@pytest.fixture
def people(nurse, psychiatrist, gp, anesthesiologist, administrator, outsider, site):
    colleague = UserFactory(username="psy-colleague", roles=[Role.PSYCHIATRIST], sites=[site])
    return {
        "nurse": nurse,
        "psychiatrist": psychiatrist,
        "colleague": colleague,
        "gp": gp,
        "anesthesiologist": anesthesiologist,
        "administrator": administrator,
        "outsider": outsider,
    }


@pytest.fixture
def plan(clinic, time_machine) -> dict[str, FollowUp]:
    """The shipped plans of an IV-ketamine and an esketamine course, due now."""
    time_machine.move_to(timezone.now(), tick=False)
    rows = {}
    for slug in ("iv-ketamine", "esketamine-rems"):
        course = clinic.course(slug)
        for followup in services.plan_from(
            course=course, start=timezone.now(), acting_user=clinic.nurse
        ):
            rows.setdefault(followup.code, followup)
    time_machine.move_to(rows["day7_review"].due_at, tick=False)
    return {kind: rows[kind] for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ROLES)
def test_u_f2_the_rule_is_what_spec_u_says(plan, people, role, kind):
    user, followup = people[role], plan[kind]

    assert may_complete_followup(user, followup) is (role in ALLOWED[kind])
    refusal = completion_refusal(user, followup)
    assert (refusal is None) is (role in ALLOWED[kind])
    if refusal is not None:
        assert refusal.strip()  # a reason, for the page and the 403


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ROLES)
def test_u_f2_s_the_service_accepts_exactly_whom_the_rule_allows(
    plan, people, password, role, kind
):
    user, followup = people[role], plan[kind]
    allowed = may_complete_followup(user, followup)

    try:
        services.followup_complete(
            followup=followup, acting_user=user, password=password, **service_values(kind)
        )
    except PermissionDenied as refused:
        assert not allowed
        assert str(refused) == completion_refusal(user, followup)
    else:
        assert allowed
    followup.refresh_from_db()
    assert (followup.state == FollowUp.State.COMPLETED) is allowed


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ROLES)
def test_u_f2_the_page_shows_the_form_and_the_sign_button_exactly_when_the_rule_allows(
    plan, people, client, role, kind
):
    user, followup = people[role], plan[kind]
    allowed = may_complete_followup(user, followup)
    client.force_login(user)

    response = client.get(reverse("followups:complete", args=[followup.pk]))

    if role == "outsider":
        assert response.status_code == 404  # another site's record does not exist for them
        return
    if not user.has_perm("followups.complete_followup"):
        assert response.status_code == 403
        return
    assert response.status_code == 200
    page = response.content.decode()
    assert ('data-testid="followup-form"' in page) is allowed
    assert ("Sign and complete" in page) is (allowed and followup.signed_by_psychiatrist)
    assert ('data-testid="followup-refusal"' in page) is (not allowed)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ROLES)
def test_u_f2_the_view_accepts_exactly_whom_the_rule_allows(
    plan, people, client, password, role, kind
):
    user, followup = people[role], plan[kind]
    allowed = may_complete_followup(user, followup)
    client.force_login(user)

    response = client.post(
        reverse("followups:complete", args=[followup.pk]), form_values(kind, password)
    )

    expected = 302 if allowed else 404 if role == "outsider" else 403
    assert response.status_code == expected
    followup.refresh_from_db()
    assert (followup.state == FollowUp.State.COMPLETED) is allowed


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ROLES)
def test_u_f1_recording_as_missed_follows_the_same_rule_in_service_view_and_page(
    plan, people, client, role, kind
):
    """Closing as missed is the same question without the signature: the assigned role (a
    psychiatrist for any clinical one) of the site."""
    user, followup = people[role], plan[kind]
    allowed = may_close_followup(user, followup)
    assert allowed is (role in ALLOWED[kind])
    assert (closing_refusal(user, followup) is None) is allowed
    client.force_login(user)
    url = reverse("followups:missed", args=[followup.pk])

    page = client.get(url)
    if role == "outsider":
        assert page.status_code == 404
    elif not user.has_perm("followups.complete_followup"):
        assert page.status_code == 403
    else:
        assert page.status_code == 200
        assert ('data-testid="missed-form"' in page.content.decode()) is allowed
    response = client.post(url, {"reason": "Could not reach."})

    assert response.status_code == (302 if allowed else 404 if role == "outsider" else 403)
    followup.refresh_from_db()
    assert (followup.state == FollowUp.State.MISSED) is allowed
    if not allowed:
        with pytest.raises(PermissionDenied):
            services.followup_mark_missed(followup=followup, acting_user=user, reason="Away")
