"""factory_boy factories. Clinical rows are built through the services where it matters."""

from __future__ import annotations

from datetime import date, timedelta

import factory
from django.contrib.auth.models import Group
from django.utils import timezone

from clinic.models import Role, Site, User
from clinic.services import sha256_text
from patients.models import ConsentKind, ConsentRecord, ConsentTemplate, Patient

TEST_PASSWORD = "correct-horse-battery-staple"


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Site {n}")
    time_zone = "Europe/London"
    address = "1 Test Street"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@vigil.invalid")
    password = factory.PostGenerationMethodCall("set_password", TEST_PASSWORD)

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        if create and extracted:
            self.groups.set(Group.objects.filter(name__in=[Role(r).value for r in extracted]))

    @factory.post_generation
    def sites(self, create, extracted, **kwargs):
        if create and extracted:
            self.sites.set(extracted)

    @classmethod
    def _after_postgeneration(cls, instance, create, results=None):
        if create:
            instance.save()


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    home_site = factory.SubFactory(SiteFactory)
    mrn = factory.Sequence(lambda n: f"MRN-{n:05d}")
    given_name = factory.Faker("first_name")
    family_name = factory.Faker("last_name")
    date_of_birth = date(1985, 5, 17)
    sex = Patient.Sex.FEMALE
    weight_kg = 70
    weight_measured_on = factory.LazyFunction(lambda: timezone.localdate() - timedelta(days=3))
    created_by = factory.SubFactory(UserFactory)


class ConsentTemplateFactory(factory.django.DjangoModelFactory):
    """A published template unless `published_at=None` is passed."""

    class Meta:
        model = ConsentTemplate

    kind = ConsentKind.KETAMINE_TREATMENT
    version = factory.Sequence(lambda n: n + 1)
    title = factory.LazyAttribute(lambda t: f"Consent {t.kind} v{t.version}")
    text = factory.LazyAttribute(lambda t: f"Full consent text for {t.kind} version {t.version}.")
    validity_days = 365
    created_by = factory.SubFactory(UserFactory)
    published_at = factory.LazyFunction(timezone.now)
    published_by = factory.SelfAttribute("created_by")
    text_sha256 = factory.LazyAttribute(lambda t: sha256_text(t.text) if t.published_at else "")


class ConsentRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConsentRecord

    patient = factory.SubFactory(PatientFactory)
    template = factory.SubFactory(ConsentTemplateFactory)
    template_sha256 = factory.LazyAttribute(lambda c: sha256_text(c.template.text))
    signature_method = ConsentRecord.SignatureMethod.TABLET
    signed_at = factory.LazyFunction(timezone.now)
    witness = factory.SubFactory(UserFactory)
    valid_until = factory.LazyAttribute(
        lambda c: timezone.localdate(c.signed_at) + timedelta(days=c.template.validity_days - 1)
    )
