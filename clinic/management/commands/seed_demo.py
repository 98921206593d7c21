"""Demo data for a first look: two sites, one account per role, a dozen patients.

Idempotent: running it again changes nothing. Refuses to run with DJANGO_DEBUG=0.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from clinic.models import Role, Site, User
from clinic.services import attribute, service_account
from followups import services as followup_services
from monitoring import services as monitoring_services
from monitoring.models import DrugLot
from patients import services as patient_services
from patients.models import ConsentKind, ConsentTemplate, Patient
from protocols import services as protocol_services
from protocols.models import Protocol

SITES = [
    ("Northside Clinic", "Europe/London", "12 North Road, Leeds LS1 4AB"),
    ("Harbour Clinic", "America/New_York", "400 Harbor Street, Boston, MA 02110"),
]

# username, first, last, roles, sites (indexes into SITES)
STAFF = [
    ("nurse", "Nora", "Nightingale", [Role.NURSE], [0]),
    ("psychiatrist", "Priya", "Shah", [Role.PSYCHIATRIST], [0]),
    ("anesthesiologist", "Adam", "Okafor", [Role.ANESTHESIOLOGIST], [0]),
    ("gp", "Grace", "Porter", [Role.GP], [0]),
    ("admin", "Alex", "Morgan", [Role.ADMINISTRATOR], [0, 1]),
    ("harbour-nurse", "Hana", "Reyes", [Role.NURSE], [1]),
    ("harbour-psychiatrist", "Henry", "Cole", [Role.PSYCHIATRIST], [1]),
]

TEMPLATE_TEXT = (
    "{title}\n\nI have been told what the treatment involves, its expected benefits, its risks "
    "(raised blood pressure, dissociation, sedation, nausea, misuse) and the alternatives. "
    "I agree to be monitored during each session and to be escorted home afterwards. "
    "I will not drive until the next day after sleep. I may withdraw this consent at any time."
)

# kind, version, title, requires re-consent
TEMPLATES = [
    (ConsentKind.KETAMINE_TREATMENT, 1, "Ketamine infusion: off-label treatment consent", False),
    (ConsentKind.KETAMINE_TREATMENT, 2, "Ketamine infusion: consent (2026 revision)", True),
    (ConsentKind.ESKETAMINE_REMS, 1, "Spravato REMS patient enrollment", False),
    (ConsentKind.DATA_SHARING, 1, "Sharing treatment data with your GP", False),
]

# mrn, given, family, born, sex, site, consents [(kind, version, days ago signed, withdrawn?)]
PATIENTS = [
    (
        "N-1001",
        "Amelia",
        "Hughes",
        date(1984, 3, 2),
        "female",
        0,
        [(ConsentKind.KETAMINE_TREATMENT, 2, 20, False), (ConsentKind.DATA_SHARING, 1, 20, False)],
    ),
    (
        "N-1002",
        "Oliver",
        "Bennett",
        date(1979, 11, 17),
        "male",
        0,
        [(ConsentKind.KETAMINE_TREATMENT, 1, 60, False)],
    ),  # superseded by v2
    (
        "N-1003",
        "Isla",
        "Patel",
        date(1991, 6, 30),
        "female",
        0,
        [(ConsentKind.KETAMINE_TREATMENT, 2, 10, True)],
    ),  # withdrawn
    (
        "N-1004",
        "George",
        "Walsh",
        date(1968, 1, 9),
        "male",
        0,
        [(ConsentKind.DATA_SHARING, 1, 400, False)],
    ),  # expired
    (
        "N-1005",
        "Sofia",
        "Kowalski",
        date(2000, 9, 12),
        "female",
        0,
        [(ConsentKind.ESKETAMINE_REMS, 1, 5, False), (ConsentKind.DATA_SHARING, 1, 5, False)],
    ),
    (
        "N-1006",
        "Noah",
        "O'Brien",
        date(1988, 4, 21),
        "male",
        0,
        [(ConsentKind.KETAMINE_TREATMENT, 2, 355, False)],
    ),  # expires within 30 days
    ("N-1007", "José", "Fernández", date(1975, 12, 3), "male", 0, []),
    (
        "N-1008",
        "Chloé",
        "Dubois",
        date(1995, 2, 14),
        "female",
        0,
        [(ConsentKind.KETAMINE_TREATMENT, 2, 1, False)],
    ),
    (
        "H-2001",
        "Maya",
        "Johnson",
        date(1982, 7, 7),
        "female",
        1,
        [(ConsentKind.ESKETAMINE_REMS, 1, 30, False)],
    ),
    (
        "H-2002",
        "Ethan",
        "Miller",
        date(1990, 10, 1),
        "male",
        1,
        [(ConsentKind.KETAMINE_TREATMENT, 2, 3, False)],
    ),
    (
        "H-2003",
        "Ava",
        "Nguyen",
        date(1973, 5, 25),
        "female",
        1,
        [(ConsentKind.KETAMINE_TREATMENT, 1, 500, False)],
    ),  # expired and superseded
    ("H-2004", "Liam", "Garcia", date(1986, 8, 19), "male", 1, []),
]


# mrn, protocol, how far the assessment got, PHQ-9 items
ASSESSMENTS = [
    ("N-1001", "iv-ketamine", "approved", [2, 3, 2, 2, 1, 2, 2, 1, 0]),
    ("N-1002", "iv-ketamine", "submitted", [3, 3, 2, 3, 2, 2, 2, 1, 1]),  # item 9 > 0
    ("N-1005", "esketamine-rems", "submitted", [2, 2, 2, 1, 1, 1, 2, 1, 0]),
    ("N-1008", "iv-ketamine", "draft", [1, 2, 1, 2, 1, 1, 1, 0, 0]),
]


class Command(BaseCommand):
    help = "Load demo sites, staff (one per role) and patients with consents in every status."

    def add_arguments(self, parser):
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="Do nothing when the database already holds patients (used by `make run`).",
        )

    def handle(self, *args, if_empty: bool = False, **options):
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo refuses to run with DJANGO_DEBUG=0: demo accounts "
                "share a published password."
            )
        if if_empty and Patient.objects.exists():
            self.stdout.write("Database already has patients; demo data not loaded.")
            return
        with transaction.atomic():
            robot = service_account()
            sites = [self._site(robot, *spec) for spec in SITES]
            staff = {spec[0]: self._user(robot, sites, *spec) for spec in STAFF}
            templates = {(k, v): self._template(robot, k, v, t, r) for k, v, t, r in TEMPLATES}
            created = sum(self._patient(robot, sites, staff, templates, *spec) for spec in PATIENTS)
            for mrn, slug, stage, phq9 in ASSESSMENTS:
                self._assessment(staff, mrn, slug, stage, phq9)
            self._floor(sites, staff)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data ready: {len(sites)} sites, {len(staff)} staff, "
                f"{created} new patients ({len(PATIENTS) - created} already there)."
            )
        )
        self.stdout.write(
            "Log in at http://127.0.0.1:8000 as nurse, psychiatrist, anesthesiologist, gp or "
            f"admin, password: {settings.DEMO_PASSWORD}"
        )

    def _site(self, robot: User, name: str, time_zone: str, address: str) -> Site:
        site = Site.objects.filter(name=name).first()
        if site is None:
            site = Site(name=name, time_zone=time_zone, address=address)
            site.full_clean()
            attribute(site, acting_user=robot, reason="Demo data")
            site.save()
        return site

    def _user(self, robot, sites, username, first, last, roles, site_indexes) -> User:
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User(
                username=username,
                first_name=first,
                last_name=last,
                email=f"{username}@vigil.invalid",
                is_staff=Role.ADMINISTRATOR in roles,
            )
            user.set_password(settings.DEMO_PASSWORD)
            attribute(user, acting_user=robot, reason="Demo data")
            user.save()
            user.groups.set(Group.objects.filter(name__in=[r.value for r in roles]))
            user.sites.set([sites[i] for i in site_indexes])
        return user

    def _template(self, robot, kind, version, title, requires_reconsent) -> ConsentTemplate:
        template = ConsentTemplate.objects.filter(kind=kind, version=version).first()
        if template is None:
            template = patient_services.consent_template_create(
                acting_user=robot,
                kind=kind,
                title=title,
                text=TEMPLATE_TEXT.format(title=title),
                requires_reconsent=requires_reconsent,
            )
            template = patient_services.consent_template_publish(
                template=template, acting_user=robot
            )
        return template

    def _assessment(self, staff, mrn, slug, stage, phq9) -> None:
        patient = Patient.objects.get(home_site__name=SITES[0][0], mrn=mrn)
        if patient.courses.exists():
            return
        nurse, psychiatrist = staff["nurse"], staff["psychiatrist"]
        course = protocol_services.course_start(
            patient=patient,
            protocol=Protocol.objects.get(slug=slug),
            acting_user=nurse,
            indication="trd",
            responsible_psychiatrist=psychiatrist,
            planned_sessions=6,
        )
        assessment = protocol_services.assessment_create(course=course, acting_user=nurse)
        rules = course.protocol_version.parsed
        contraindications = {
            c.code: {"present": False, "note": ""} for c in rules.contraindications
        }
        if mrn == "N-1005":
            contraindications["high_dose_benzodiazepines"] = {
                "present": True,
                "note": "Clonazepam 2 mg nightly; taper discussed.",
            }
        protocol_services.assessment_update(
            assessment=assessment,
            acting_user=nurse,
            diagnosis="Major depressive disorder, recurrent, severe (F33.2)",
            psychiatric_history="Three adequate antidepressant trials without remission.",
            psychosis_personal=False,
            mania_personal=False,
            psychosis_mania_family=False,
            substance_use="None",
            ketamine_pcp_use="never",
            alcohol_use="2 units a week",
            medical_history="Hypothyroidism, treated.",
            current_medications="Sertraline 200 mg",
            allergies="None known",
            benzodiazepines=mrn == "N-1005",
            sedative_hypnotics=False,
            psychostimulants=False,
            maois=False,
            opioids=False,
            concomitant_notes="",
            pregnancy="not-applicable" if patient.sex == "male" else "not-pregnant",
            sbp=128,
            dbp=82,
            hr=74,
            rr=14,
            spo2=98,
            weight_kg=patient.weight_kg,
            moca_total=None,
            madrs_total=None,
            phq9_items=phq9,
            gad7_items=[2, 2, 1, 2, 1, 1, 1],
            cssrs_answers={
                "q1": phq9[8] > 0,
                "q2": False,
                "q3": None,
                "q4": None,
                "q5": None,
                "q6": False,
                "q6_recent": None,
            },
            contraindications=contraindications,
        )
        if stage in {"submitted", "approved"}:
            protocol_services.assessment_submit(assessment=assessment, acting_user=nurse)
        if stage == "approved":
            protocol_services.assessment_sign(
                assessment=assessment,
                signer=psychiatrist,
                password=settings.DEMO_PASSWORD,
                approve=True,
            )

    def _floor(self, sites, staff) -> None:
        """Stock at each site, and one infusion running at Northside for the floor board."""
        nurse, psychiatrist = staff["nurse"], staff["psychiatrist"]
        for site, user in ((sites[0], nurse), (sites[1], staff["harbour-nurse"])):
            for drug, number, concentration, received in (
                ("ketamine", f"KET-{site.pk:02d}-2611", Decimal("10"), Decimal("5000")),
                ("esketamine", f"SPR-{site.pk:02d}-2611", Decimal("140"), Decimal("1680")),
            ):
                if not DrugLot.objects.filter(site=site, lot_number=number).exists():
                    monitoring_services.lot_receive(
                        site=site,
                        acting_user=user,
                        drug=drug,
                        lot_number=number,
                        concentration_mg_per_ml=concentration,
                        expires_on=timezone.localdate() + timedelta(days=400),
                        received_mg=received,
                    )
        patient = Patient.objects.get(home_site=sites[0], mrn="N-1001")
        if patient.sessions.exists():
            return
        # Follow-ups as if the previous infusion was discharged yesterday: the next-day call is
        # due today, the reviews are upcoming.
        followup_services.plan_from(
            course=patient.courses.get(status="active"),
            start=timezone.now() - timedelta(hours=25),
            acting_user=staff["nurse"],
        )
        course = patient.courses.get(status="active")
        session = monitoring_services.session_schedule(
            course=course,
            acting_user=nurse,
            scheduled_at=timezone.now(),
            chair="3",
            supervising_clinician=staff["anesthesiologist"],
        )
        session = monitoring_services.session_check_in(
            session=session,
            acting_user=nurse,
            escort_confirmed=True,
            escort_details="Partner, by car",
        )
        monitoring_services.vitals_record(
            session=session, acting_user=nurse, sbp=128, dbp=80, hr=72, rr=14, spo2=98, moaas=5
        )
        lot = DrugLot.objects.get(site=sites[0], drug="ketamine")
        monitoring_services.dose_record(
            session=session,
            acting_user=nurse,
            lot=lot,
            dose_mg=Decimal("36.25"),
            volume_ml=Decimal("3.63"),
            started_at=timezone.now(),
            prescriber=psychiatrist,
        )

    def _patient(
        self, robot, sites, staff, templates, mrn, given, family, born, sex, site_index, consents
    ) -> bool:
        site = sites[site_index]
        if Patient.objects.filter(home_site=site, mrn=mrn).exists():
            return False
        patient = patient_services.patient_register(
            site=site,
            acting_user=robot,
            mrn=mrn,
            given_name=given,
            family_name=family,
            date_of_birth=born,
            sex=sex,
            phone="0113 496 0000",
            usual_escort="Partner, by car",
            gp_name="Dr Lee, Park Surgery",
            weight_kg=Decimal("72.5"),
            weight_measured_on=timezone.localdate() - timedelta(days=7),
        )
        nurse = staff["nurse"] if site_index == 0 else staff["harbour-nurse"]
        prescriber = staff["psychiatrist"] if site_index == 0 else staff["harbour-psychiatrist"]
        for kind, version, days_ago, withdrawn in consents:
            consent = patient_services.consent_record(
                patient=patient,
                template=templates[(kind, version)],
                acting_user=robot,
                witness=nurse,
                signature_method="tablet",
                signed_at=timezone.now() - timedelta(days=days_ago),
                prescriber=prescriber if kind == ConsentKind.ESKETAMINE_REMS else None,
            )
            if withdrawn:
                patient_services.consent_withdraw(
                    consent=consent,
                    acting_user=robot,
                    reason="Patient asked to stop treatment (demo).",
                )
        return True
