"""Who may open which URL (SPEC §U): every URL x every actor x own/other site.

Expectations come from SPEC §U and the role → permission map of
`clinic/migrations/0002_roles_and_service_account.py`, not from what the views happen to return:

- anonymous visitors are sent to the login page, except for `login` and `healthz`;
- a role without the permission gets 403;
- an object outside the user's sites answers 404 (never 403), whatever the role, so that its
  existence does not leak;
- consent templates are chain-wide documents (they have no site), so their rows vary by
  draft / published instead of own / other site.

State-changing rows post an invalid form: allowed roles get the form back with errors (200) and
nothing is saved, whatever the answer. The Django admin (namespace `admin`) has its own tests at
the end of the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from django.contrib.messages import get_messages
from django.core.files.base import ContentFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from clinic.middleware import SESSION_KEY
from clinic.models import Site, User
from patients.models import ConsentRecord, ConsentTemplate, Patient
from tests.factories import ConsentRecordFactory, ConsentTemplateFactory, PatientFactory

pytestmark = pytest.mark.django_db

ANONYMOUS = "anonymous"
ROLES = ("nurse", "psychiatrist", "anesthesiologist", "gp", "administrator")

# The smallest file the scan view will stream back: content sniffing happens at upload, not here.
PDF_SCAN = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"


def only(*roles: str, ok: int = 200) -> dict[str, int]:
    """`ok` for the given roles, 403 for every other role."""
    unknown = set(roles) - set(ROLES)
    assert not unknown, unknown
    return {role: ok if role in roles else 403 for role in ROLES}


def every_role(status: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, status)


# Who holds which permission, as granted by the roles migration.
CAN_VIEW_PATIENTS = ROLES
CAN_REGISTER = ("nurse", "psychiatrist")  # patients.add_patient
CAN_EDIT_PATIENT = ("nurse", "psychiatrist", "anesthesiologist")  # patients.change_patient
CAN_VOID = ("nurse", "psychiatrist")  # patients.void_patient
CAN_VIEW_CONSENTS = ROLES  # patients.view_consentrecord
CAN_RECORD_CONSENT = ("nurse", "psychiatrist")  # patients.add_consentrecord
CAN_WITHDRAW = ("nurse", "psychiatrist")  # patients.withdraw_consentrecord
CAN_READ_TEMPLATES = ("nurse", "psychiatrist", "administrator")  # view_consenttemplate
CAN_WRITE_TEMPLATES = ("administrator",)  # add / change / publish_consenttemplate

# Objects a row can address. Site-scoped ones get an own-site and an other-site variant.
SITE_SCOPED = {"patient": "patient_id", "consent": "consent_id"}
TEMPLATES = {"draft": "template_id", "published": "template_id"}


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    # Answer per role for the own-site object (or for a URL without object).
    expected: dict[str, int]
    # None, a site-scoped object ("patient", "consent") or a template ("draft", "published").
    obj: str | None = None
    anonymous: int = 302
    data: dict | Callable[[SimpleNamespace], dict] = field(default_factory=dict)
    # The POST is invalid on purpose: a 200 must carry form errors.
    invalid: bool = False
    # Where an authenticated 302 must lead.
    redirect: Callable[[SimpleNamespace], str] | None = None

    @property
    def variants(self) -> tuple[str | None, ...]:
        if self.obj in SITE_SCOPED:
            return ("own", "other")
        if self.obj in TEMPLATES:
            return (self.obj,)
        return (None,)

    def url(self, world: SimpleNamespace, variant: str | None) -> str:
        if self.obj is None:
            return reverse(self.name)
        if self.obj in SITE_SCOPED:
            target = getattr(world, self.obj)[variant]
            return reverse(self.name, kwargs={SITE_SCOPED[self.obj]: target.pk})
        return reverse(self.name, kwargs={TEMPLATES[self.obj]: getattr(world, self.obj).pk})

    def expected_for(self, actor: str, variant: str | None) -> int:
        if actor == ANONYMOUS:
            return self.anonymous
        if variant == "other":
            return 404
        return self.expected[actor]


def _home(world: SimpleNamespace) -> str:
    return reverse("home")


def _login(world: SimpleNamespace) -> str:
    return reverse("login")


def _draft_detail(world: SimpleNamespace) -> str:
    return reverse("patients:template_detail", kwargs={"template_id": world.draft.pk})


def _published_detail(world: SimpleNamespace) -> str:
    return reverse("patients:template_detail", kwargs={"template_id": world.published.pk})


MATRIX: list[Row] = [
    # --- clinic ----------------------------------------------------------------------------------
    Row("home", "GET", every_role(200)),
    Row("healthz", "GET", every_role(200), anonymous=200),
    Row("login", "GET", every_role(302), anonymous=200, redirect=_home),
    Row(
        "login",
        "POST",
        every_role(302),
        anonymous=200,
        invalid=True,
        redirect=_home,
        data={"username": "nobody", "password": ""},
    ),
    Row("logout", "GET", every_role(405)),  # Django 5 logs out on POST only
    Row("logout", "POST", every_role(302), redirect=_login),
    Row("password_change", "GET", every_role(200)),
    Row("password_change", "POST", every_role(200), invalid=True, data={"old_password": ""}),
    Row("password_change_done", "GET", every_role(200)),
    Row("switch_site", "GET", every_role(405)),
    # The site posted is the user's own; switching to another site is tested below.
    Row(
        "switch_site",
        "POST",
        every_role(302),
        redirect=_home,
        data=lambda world: {"site": world.site.pk},
    ),
    # --- patients ---------------------------------------------------------------------------------
    Row("patients:list", "GET", only(*CAN_VIEW_PATIENTS)),
    Row("patients:register", "GET", only(*CAN_REGISTER)),
    Row("patients:register", "POST", only(*CAN_REGISTER), invalid=True, data={"mrn": ""}),
    Row("patients:chart", "GET", only(*CAN_VIEW_PATIENTS), obj="patient"),
    Row("patients:edit", "GET", only(*CAN_EDIT_PATIENT), obj="patient"),
    Row(
        "patients:edit",
        "POST",
        only(*CAN_EDIT_PATIENT),
        obj="patient",
        invalid=True,
        data={"mrn": ""},
    ),
    Row("patients:void", "GET", only(*CAN_VOID), obj="patient"),
    Row("patients:void", "POST", only(*CAN_VOID), obj="patient", invalid=True, data={"reason": ""}),
    Row("patients:consent_new", "GET", only(*CAN_RECORD_CONSENT), obj="patient"),
    Row(
        "patients:consent_new",
        "POST",
        only(*CAN_RECORD_CONSENT),
        obj="patient",
        invalid=True,
        data={"template": ""},
    ),
    Row("patients:consent_withdraw", "GET", only(*CAN_WITHDRAW), obj="consent"),
    Row(
        "patients:consent_withdraw",
        "POST",
        only(*CAN_WITHDRAW),
        obj="consent",
        invalid=True,
        data={"reason": ""},
    ),
    Row("patients:consent_scan", "GET", only(*CAN_VIEW_CONSENTS), obj="consent"),
    # --- consent templates (chain-wide documents) ----------------------------------------------
    Row("patients:template_list", "GET", only(*CAN_READ_TEMPLATES)),
    Row("patients:template_new", "GET", only(*CAN_WRITE_TEMPLATES)),
    Row(
        "patients:template_new",
        "POST",
        only(*CAN_WRITE_TEMPLATES),
        invalid=True,
        data={"title": ""},
    ),
    Row("patients:template_detail", "GET", only(*CAN_READ_TEMPLATES), obj="draft"),
    Row("patients:template_detail", "GET", only(*CAN_READ_TEMPLATES), obj="published"),
    Row("patients:template_edit", "GET", only(*CAN_WRITE_TEMPLATES), obj="draft"),
    Row(
        "patients:template_edit",
        "POST",
        only(*CAN_WRITE_TEMPLATES),
        obj="draft",
        invalid=True,
        data={"title": ""},
    ),
    # A published version never changes: its edit page sends the administrator back.
    Row(
        "patients:template_edit",
        "GET",
        only(*CAN_WRITE_TEMPLATES, ok=302),
        obj="published",
        redirect=_published_detail,
    ),
    Row("patients:template_publish", "GET", every_role(405), obj="draft"),
    Row(
        "patients:template_publish",
        "POST",
        only(*CAN_WRITE_TEMPLATES, ok=302),
        obj="draft",
        redirect=_draft_detail,
    ),
]


def _cases() -> list:
    cases = []
    for row in MATRIX:
        for variant in row.variants:
            for actor in (ANONYMOUS, *ROLES):
                parts = [row.name, row.method, actor]
                if variant:
                    parts.append(variant)
                cases.append(pytest.param(row, actor, variant, id="-".join(parts)))
    return cases


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Every test here creates seven staff accounts with a password; full-strength PBKDF2 would
    # make the ~280 cases take minutes. force_login never checks the password.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(settings, tmp_path, site, other_site, nurse, outsider, administrator):
    """One of each object in `site` and in `other_site`, plus a draft and a published template."""
    settings.MEDIA_ROOT = tmp_path
    published = ConsentTemplateFactory(created_by=administrator)
    draft = ConsentTemplateFactory(created_by=administrator, published_at=None, published_by=None)
    patients, consents = {}, {}
    for variant, home_site, witness in (("own", site, nurse), ("other", other_site, outsider)):
        patients[variant] = PatientFactory(home_site=home_site, created_by=witness)
        consents[variant] = ConsentRecordFactory(
            patient=patients[variant],
            template=published,
            witness=witness,
            signature_method=ConsentRecord.SignatureMethod.WET_SCANNED,
            scan=ContentFile(PDF_SCAN, name="scan.pdf"),
            scan_content_type="application/pdf",
        )
    return SimpleNamespace(
        site=site,
        other_site=other_site,
        outsider=outsider,
        patient=patients,
        consent=consents,
        draft=draft,
        published=published,
    )


def _saved_state() -> tuple:
    """Row counts and history counts of everything a form on these pages could write."""
    models = (Patient, ConsentRecord, ConsentTemplate, User, Site)
    return tuple((model.objects.count(), model.history.count()) for model in models) + tuple(
        ConsentTemplate.objects.filter(published_at__isnull=True).values_list("pk")
    )


@pytest.mark.parametrize(("row", "actor", "variant"), _cases())
def test_each_actor_gets_the_answer_its_role_allows(request, client, world, row, actor, variant):
    if actor != ANONYMOUS:
        client.force_login(request.getfixturevalue(actor))
    url = row.url(world, variant)
    data = row.data(world) if callable(row.data) else row.data
    before = _saved_state()

    response = client.post(url, data) if row.method == "POST" else client.get(url)

    expected = row.expected_for(actor, variant)
    try:
        assert response.status_code == expected, (
            f"{row.method} {url} as {actor}: {response.status_code}, expected {expected}"
        )
        if expected == 302 and actor == ANONYMOUS:
            assert response["Location"].startswith(f"{reverse('login')}?next="), response[
                "Location"
            ]
        elif expected == 302 and row.redirect:
            assert response["Location"] == row.redirect(world)
        if expected == 200 and row.invalid:
            assert response.context["form"].errors, "the form came back without errors"
        if expected != 302 or actor == ANONYMOUS:
            assert _saved_state() == before, "a refused or invalid request saved something"
    finally:
        response.close()  # the scan view streams a file


def test_the_matrix_has_a_row_for_every_named_url():
    """A new URL pattern fails here until it gets its rows (the admin is tested on its own)."""
    named, unnamed = set(), []

    def walk(resolver: URLResolver, prefix: str, route: str) -> None:
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace == "admin":
                    continue
                namespace = f"{prefix}{pattern.namespace}:" if pattern.namespace else prefix
                walk(pattern, namespace, route + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                if pattern.name:
                    named.add(prefix + pattern.name)
                else:
                    unnamed.append(route + str(pattern.pattern))

    walk(get_resolver(), "", "")

    covered = {row.name for row in MATRIX}
    assert not unnamed, f"URL patterns without a name cannot have rows: {unnamed}"
    missing, stale = sorted(named - covered), sorted(covered - named)
    assert not missing, f"named URLs without a row in MATRIX: {', '.join(missing)}"
    assert not stale, f"rows for URLs that no longer exist: {', '.join(stale)}"


def test_the_matrix_has_no_duplicate_test_ids():
    ids = [case.id for case in _cases()]
    assert len(ids) == len(set(ids))


def test_switching_to_a_site_the_user_does_not_belong_to_changes_nothing(client, world, nurse):
    client.force_login(nurse)

    response = client.post(reverse("switch_site"), {"site": world.other_site.pk})

    assert response.status_code == 302
    assert client.session.get(SESSION_KEY) != world.other_site.pk
    refused = [str(message) for message in get_messages(response.wsgi_request)]
    assert refused == ["You are not a member of that site."]


# --- The Django admin -----------------------------------------------------------------------------


def test_admin_sends_anonymous_visitors_to_the_admin_login(client):
    response = client.get(reverse("admin:index"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_admin_turns_away_staff_who_are_not_administrators(client, nurse):
    client.force_login(nurse)

    response = client.get(reverse("admin:index"))

    assert response.status_code in {302, 403}
    if response.status_code == 302:
        assert response["Location"].startswith(reverse("admin:login"))


def test_admin_opens_for_the_administrator(client, administrator):
    client.force_login(administrator)

    assert client.get(reverse("admin:index")).status_code == 200


@pytest.mark.parametrize(
    ("model", "changelist"),
    [
        pytest.param(Patient, "admin:patients_patient_changelist", id="patients"),
        pytest.param(ConsentRecord, "admin:patients_consentrecord_changelist", id="consents"),
    ],
)
def test_admin_lists_only_the_administrators_own_site_records(
    client, world, administrator, model, changelist
):
    client.force_login(administrator)

    response = client.get(reverse(changelist))

    assert response.status_code == 200
    shown = {obj.pk for obj in response.context["cl"].result_list}
    own = world.patient["own"] if model is Patient else world.consent["own"]
    assert shown == {own.pk}


def test_admin_patient_list_leaks_no_other_site_identifiers(client, world, administrator):
    client.force_login(administrator)

    content = client.get(reverse("admin:patients_patient_changelist")).content.decode()

    assert world.patient["own"].mrn in content
    assert world.patient["other"].mrn not in content


@pytest.mark.parametrize("model_name", ["patient", "consentrecord"])
def test_admin_offers_no_add_change_or_delete_for_clinical_records(
    client, world, administrator, model_name
):
    client.force_login(administrator)
    own = world.patient["own"] if model_name == "patient" else world.consent["own"]
    before = _saved_state()

    add = client.get(reverse(f"admin:patients_{model_name}_add"))
    change_post = client.post(reverse(f"admin:patients_{model_name}_change", args=[own.pk]), {})
    delete = client.get(reverse(f"admin:patients_{model_name}_delete", args=[own.pk]))
    changelist = client.get(reverse(f"admin:patients_{model_name}_changelist"))

    assert add.status_code == 403
    assert change_post.status_code == 403
    assert delete.status_code == 403
    assert changelist.status_code == 200
    action_form = changelist.context.get("action_form")
    actions = dict(action_form.fields["action"].choices) if action_form else {}
    assert "delete_selected" not in actions
    assert b'value="delete_selected"' not in changelist.content
    assert _saved_state() == before


@pytest.mark.parametrize("model_name", ["patient", "consentrecord"])
def test_admin_answers_an_other_site_record_as_if_it_did_not_exist(
    client, world, administrator, model_name
):
    client.force_login(administrator)
    other = world.patient["other"] if model_name == "patient" else world.consent["other"]
    missing_id = type(other).objects.order_by("-pk").first().pk + 1000

    for_other = client.get(reverse(f"admin:patients_{model_name}_change", args=[other.pk]))
    for_missing = client.get(reverse(f"admin:patients_{model_name}_change", args=[missing_id]))

    assert for_other.status_code == for_missing.status_code
    assert for_other.status_code in {302, 404}


@pytest.mark.parametrize(
    ("app_model", "other_record"),
    [
        pytest.param("patients_patient", lambda w: w.patient["other"], id="patient"),
        pytest.param("patients_consentrecord", lambda w: w.consent["other"], id="consentrecord"),
        pytest.param("clinic_user", lambda w: w.outsider, id="staff-of-other-site"),
    ],
)
def test_admin_history_of_an_other_site_record_is_not_shown(
    client, world, administrator, app_model, other_record
):
    """SPEC §U: a record outside the user's sites answers 404, in its admin history pages too."""
    client.force_login(administrator)
    other = other_record(world)
    history_id = other.history.latest().history_id

    history = client.get(reverse(f"admin:{app_model}_history", args=[other.pk]))
    version = client.get(reverse(f"admin:{app_model}_simple_history", args=[other.pk, history_id]))

    assert (history.status_code, version.status_code) == (404, 404)
