"""Publish version 2 of the two default protocols (SPEC §D), with the corrections of issue 10.

For each default protocol whose latest version is still version 1 exactly as Vigil shipped it,
create and publish version 2 from the frozen documents below, attributed like 0002: created and
published by the service account. A protocol a clinic has already changed (a later version, even
a draft) is left alone: its administrators fold the corrections in by publishing a version.

Self-contained: the documents are frozen here (protocols/defaults.py held the same text when this
migration was written, and may change later); the version 1 compared against is the frozen copy
in 0002, in every revision that migration shipped.
"""

import copy
import importlib

from django.conf import settings
from django.db import migrations
from django.db.models import Max
from django.utils import timezone

# --- Version 2 of the default protocols, frozen --------------------------------------------------

CONTRAINDICATIONS = [
    # Absolute: approval needs an override reason from the psychiatrist (SPEC §A2).
    {
        "code": "vascular_aneurysm",
        "severity": "absolute",
        "label": "Aneurysmal vascular disease (aortic, intracranial, peripheral) or AV malformation",
    },
    {
        "code": "intracerebral_haemorrhage",
        "severity": "absolute",
        "label": "History of intracerebral haemorrhage",
    },
    {
        "code": "ketamine_hypersensitivity",
        "severity": "absolute",
        "label": "Hypersensitivity to ketamine or esketamine",
    },
    {"code": "pregnancy", "severity": "absolute", "label": "Pregnancy"},
    {
        "code": "active_psychosis_mania",
        "severity": "absolute",
        "label": "Active psychosis or mania",
    },
    {
        "code": "uncontrolled_hypertension",
        "severity": "absolute",
        "label": "Uncontrolled hypertension",
    },
    # Relative: must be acknowledged with a note.
    {"code": "substance_use_disorder", "severity": "relative", "label": "Substance use disorder"},
    {"code": "past_psychosis", "severity": "relative", "label": "Past psychosis"},
    {
        "code": "unstable_cardiac",
        "severity": "relative",
        "label": "Unstable cardiac or cerebrovascular disease",
    },
    {
        "code": "raised_icp_iop",
        "severity": "relative",
        "label": "Raised intracranial or intraocular pressure",
    },
    {"code": "severe_hepatic", "severity": "relative", "label": "Severe hepatic impairment"},
    {
        "code": "high_dose_benzodiazepines",
        "severity": "relative",
        "label": "High-dose benzodiazepines",
    },
    {
        "code": "acute_suicidal_intent",
        "severity": "relative",
        "label": "Acute suicidal intent needing inpatient care",
    },
]

PLAUSIBILITY = {
    "sbp": [50, 300],
    "dbp": [20, 200],
    "hr": [20, 250],
    "rr": [4, 60],
    "spo2": [50, 100],
    "temperature_c": [30, 43],
    "moaas": [0, 5],
    "weight_kg": [20, 300],
}

ALERTS = [
    {
        "level": "warning",
        "field": "sbp",
        "op": ">=",
        "value": 180,
        "message": "SBP ≥ 180: repeat the reading within 5 minutes.",
        "repeat_check_minutes": 5,
    },
    {
        "level": "warning",
        "field": "dbp",
        "op": ">=",
        "value": 110,
        "message": "DBP ≥ 110: repeat the reading within 5 minutes.",
        "repeat_check_minutes": 5,
    },
    {
        "level": "warning",
        "field": "sbp",
        "op": ">",
        "value": 40,
        "over_baseline": True,
        "message": "SBP more than 40 above the pre-dose baseline.",
    },
    {
        "level": "warning",
        "field": "dbp",
        "op": ">",
        "value": 25,
        "over_baseline": True,
        "message": "DBP more than 25 above the pre-dose baseline.",
    },
    {
        "level": "warning",
        "field": "hr",
        "op": ">",
        "value": 120,
        "message": "Heart rate above 120.",
    },
    {"level": "warning", "field": "hr", "op": "<", "value": 50, "message": "Heart rate below 50."},
    {
        "level": "warning",
        "field": "rr",
        "op": "<",
        "value": 10,
        "message": "Respiratory rate below 10.",
    },
    {
        "level": "warning",
        "field": "rr",
        "op": ">",
        "value": 30,
        "message": "Respiratory rate above 30.",
    },
    {"level": "warning", "field": "spo2", "op": "<", "value": 93, "message": "SpO2 below 93 %."},
    {"level": "warning", "field": "moaas", "op": "<=", "value": 3, "message": "MOAA/S 3 or less."},
    {"level": "critical", "field": "sbp", "op": ">=", "value": 200, "message": "SBP ≥ 200."},
    {"level": "critical", "field": "dbp", "op": ">=", "value": 120, "message": "DBP ≥ 120."},
    {
        "level": "critical",
        "field": "sbp",
        "op": ">=",
        "value": 180,
        # SPEC §M5: two consecutive valid readings at least 5 minutes apart within the
        # persistence window, so that the 10-minute IV schedule reaches it.
        "persistence_min_gap_minutes": 5,
        "persistence_window_minutes": 15,
        "message": "SBP ≥ 180 on two consecutive readings at least 5 minutes apart within 15 minutes.",
    },
    {
        "level": "critical",
        "field": "dbp",
        "op": ">=",
        "value": 110,
        "persistence_min_gap_minutes": 5,
        "persistence_window_minutes": 15,
        "message": "DBP ≥ 110 on two consecutive readings at least 5 minutes apart within 15 minutes.",
    },
    {"level": "critical", "field": "sbp", "op": "<", "value": 90, "message": "SBP below 90."},
    {
        "level": "critical",
        "field": "hr",
        "op": ">",
        "value": 150,
        "message": "Heart rate above 150.",
    },
    {"level": "critical", "field": "spo2", "op": "<", "value": 90, "message": "SpO2 below 90 %."},
    {
        "level": "critical",
        "field": "moaas",
        "op": "==",
        "value": 0,
        "message": "MOAA/S 0: loss of consciousness.",
    },
]

PREDOSE_ALERTS = [
    {
        "level": "warning",
        "field": "sbp",
        "op": ">",
        "value": 140,
        "message": "Pre-dose SBP above 140: the prescriber decides to proceed or defer.",
    },
    {
        "level": "warning",
        "field": "dbp",
        "op": ">",
        "value": 90,
        "message": "Pre-dose DBP above 90: the prescriber decides to proceed or defer.",
    },
]

COMMON = {
    "assessment_validity_days": 365,
    "required_instruments": ["phq9", "gad7", "cssrs"],
    "contraindications": CONTRAINDICATIONS,
    "plausibility": PLAUSIBILITY,
    "fahrenheit_hint": [86, 110],
    "alerts": ALERTS,
    "predose_alerts": PREDOSE_ALERTS,
    "escalation": [
        {"overdue_hours": 24, "role": "Psychiatrist"},
        {"overdue_hours": 72, "role": "Administrator"},
    ],
    "late_entry_minutes": 10,  # SPEC §M3
}

# SPEC §G3: a complete pre-dose set.
PREDOSE_REQUIRED_FIELDS = ["sbp", "dbp", "hr", "spo2"]

# SPEC §M9: modified Aldrete — SpO2 > 92 % scores 2 (from 90 % 1), BP within 20 % of the
# baseline 2 (within 50 % 1), MOAA/S 5 scores 2 (from 3 1).
ALDRETE_SCORING = {
    "aldrete_spo2_two_points_above": 92,
    "aldrete_spo2_one_point_from": 90,
    "aldrete_bp_two_points_within_percent": 20,
    "aldrete_bp_one_point_within_percent": 50,
    "aldrete_moaas_two_points": 5,
    "aldrete_moaas_one_point_from": 3,
}

NEXT_DAY_CALL = {
    "code": "next_day_call",
    "label": "Next-day safety call",
    "offset_hours": 24,
    "window_hours": 24,
    "role": "Nurse",
    # Each session owes its own safety call; an overdue one is never superseded (SPEC §F1a).
    "per_session": True,
}

IV_KETAMINE_V2 = {
    **COMMON,
    "drug": "ketamine",
    "routes": ["iv"],
    "consent_kinds": ["ketamine-treatment"],
    "dose": {
        "route": "iv",
        "default_mg_per_kg": 0.5,
        "allowed_mg_per_kg": [0.5, 1.0],
        "infusion_minutes": 40,
        "weight_max_age_days": 30,
        "predose_vitals_max_age_minutes": 30,
        "predose_required_fields": PREDOSE_REQUIRED_FIELDS,
    },
    "schedule": [
        {
            "code": "predose",
            "label": "Pre-dose vitals",
            "measures": ["sbp", "dbp", "hr", "rr", "spo2"],
            "anchor": "dose_start",
            "offset_minutes": 0,
            # Met only by a reading measured in the 30 minutes before the dose (SPEC §M6).
            "before_dose": True,
            "window_minutes": 0,
            "window_before_minutes": 30,
        },
        {
            "code": "infusion",
            "label": "Vitals during infusion",
            "measures": ["sbp", "dbp", "hr", "rr", "spo2", "moaas"],
            "anchor": "dose_start",
            "offset_minutes": 10,
            "window_minutes": 5,
            "repeat_every_minutes": 10,
            "repeat_until": "infusion_end",
        },
        {
            "code": "recovery",
            "label": "Vitals after infusion",
            "measures": ["sbp", "dbp", "hr", "rr", "spo2", "moaas"],
            "anchor": "infusion_end",
            "offset_minutes": 15,
            "window_minutes": 5,
            "repeat_every_minutes": 15,
            "repeat_until": "discharge",
        },
        {
            "code": "cadss_baseline",
            "label": "CADSS baseline",
            "measures": ["cadss"],
            "anchor": "dose_start",
            "offset_minutes": 0,
            "window_minutes": 15,
        },
        {
            "code": "cadss_40",
            "label": "CADSS at 40 min",
            "measures": ["cadss"],
            "anchor": "dose_start",
            "offset_minutes": 40,
            "window_minutes": 10,
        },
        {
            "code": "cadss_discharge",
            "label": "CADSS before discharge",
            "measures": ["cadss"],
            "anchor": "discharge",
            "offset_minutes": 0,
            "window_minutes": 15,
        },
    ],
    "minimum_observation_minutes": 60,
    "observation_anchor": "infusion_end",
    "discharge": {
        "aldrete_min": 9,
        "moaas_required": 5,
        "escort_required": True,
        "no_driving_instruction": True,
        "prescriber_decision_required": False,
        "nurse_may_discharge": False,
        **ALDRETE_SCORING,
    },
    "followups": [
        NEXT_DAY_CALL,
        {
            "code": "day7_review",
            "label": "7-day review (PHQ-9, GAD-7)",
            "offset_hours": 168,
            "window_hours": 72,
            "role": "Psychiatrist",
            "instruments": ["phq9", "gad7", "cssrs"],
            "signed_by_psychiatrist": True,
        },
        {
            "code": "day28_review",
            "label": "28-day outcome review",
            "offset_hours": 672,
            "window_hours": 120,
            "role": "Psychiatrist",
            "instruments": ["phq9", "gad7", "cssrs"],
            "signed_by_psychiatrist": True,
        },
        {
            "code": "gp_day28",
            "label": "GP physical check at 28 days",
            "offset_hours": 672,
            "window_hours": 168,
            "role": "General practitioner",
            "requires_bp_in_person": True,
        },
    ],
}

ESKETAMINE_REMS_V2 = {
    **COMMON,
    "drug": "esketamine",
    "routes": ["intranasal"],
    "consent_kinds": ["esketamine-rems-enrollment"],
    "minimum_age_years": 18,  # label: not approved under 18 (SPEC §A4)
    # SPEC §F6: the REMS monitoring form within 7 days; its "BP at 40 min" is check bp_40.
    "rems_form_due_days": 7,
    "rems_bp_check_code": "bp_40",
    "dose": {
        "route": "intranasal",
        "device_mg": 28,
        "allowed_mg": [56, 84],
        "device_interval_minutes": 5,
        "weight_max_age_days": 30,
        "predose_vitals_max_age_minutes": 30,
        "predose_required_fields": PREDOSE_REQUIRED_FIELDS,
    },
    "schedule": [
        {
            "code": "predose_bp",
            "label": "Pre-dose BP",
            "measures": ["sbp", "dbp"],
            "anchor": "first_device",
            "offset_minutes": 0,
            # Met only by a reading measured before the first device (SPEC §M6).
            "before_dose": True,
            "window_minutes": 0,
            "window_before_minutes": 30,
        },
        {
            "code": "bp_40",
            "label": "BP at 40 min",
            "measures": ["sbp", "dbp"],
            "anchor": "first_device",
            "offset_minutes": 40,
            "window_minutes": 10,
            "window_before_minutes": 5,  # SPEC §D: window 35–50 min
        },
        {
            "code": "spo2",
            "label": "SpO2 every 15 min",
            "measures": ["spo2"],
            "anchor": "first_device",
            "offset_minutes": 15,
            "window_minutes": 5,
            "repeat_every_minutes": 15,
            "repeat_until": "discharge",
        },
        {
            "code": "bp_discharge",
            "label": "BP before discharge",
            "measures": ["sbp", "dbp"],
            "anchor": "discharge",
            "offset_minutes": 0,
            "window_minutes": 15,
        },
        {
            "code": "cadss_baseline",
            "label": "CADSS baseline",
            "measures": ["cadss"],
            "anchor": "first_device",
            "offset_minutes": 0,
            "window_minutes": 15,
        },
        {
            "code": "cadss_40",
            "label": "CADSS at 40 min",
            "measures": ["cadss"],
            "anchor": "first_device",
            "offset_minutes": 40,
            "window_minutes": 10,
        },
        {
            "code": "cadss_discharge",
            "label": "CADSS before discharge",
            "measures": ["cadss"],
            "anchor": "discharge",
            "offset_minutes": 0,
            "window_minutes": 15,
        },
    ],
    "minimum_observation_minutes": 120,
    "observation_anchor": "first_device",
    "discharge": {
        "aldrete_min": 9,
        "moaas_required": 5,
        "escort_required": True,
        "no_driving_instruction": True,
        "prescriber_decision_required": True,
        "nurse_may_discharge": False,
        **ALDRETE_SCORING,
    },
    "followups": [
        NEXT_DAY_CALL,
        {
            "code": "rems_form",
            "label": "REMS monitoring form",
            "offset_hours": 0,
            "window_hours": 168,
            "role": "Administrator",
            "per_session": True,
        },
        {
            "code": "induction_scales",
            "label": "PHQ-9 / GAD-7 (induction)",
            "offset_hours": 336,
            "window_hours": 72,
            "role": "Psychiatrist",
            "instruments": ["phq9", "gad7", "cssrs"],
            "repeat_every_days": 14,
            "repeat_count": 2,
            "on_course_completion": False,
            # Every 2 weeks of the course, whatever the sessions (SPEC §D, §F1a).
            "anchor": "course_start",
        },
        {
            "code": "end_of_induction",
            "label": "End-of-induction review (week 4)",
            "offset_hours": 672,
            "window_hours": 120,
            "role": "Psychiatrist",
            "instruments": ["phq9", "gad7", "cssrs"],
            "signed_by_psychiatrist": True,
            # Week 4 of the course, counted from its start (SPEC §D, §F1a).
            "anchor": "course_start",
            "on_course_completion": False,
        },
    ],
}

DEFAULT_PROTOCOLS_V2 = [
    ("iv-ketamine", IV_KETAMINE_V2),
    ("esketamine-rems", ESKETAMINE_REMS_V2),
]

COMMON_CHANGES = (
    "SBP ≥ 180 / DBP ≥ 110 becomes critical on two consecutive readings at least 5 minutes apart "
    "within a 15-minute persistence window (SPEC §M5), so the 10-minute IV schedule reaches it; "
    "the SBP ≥ 180 and DBP ≥ 110 warnings ask for a repeat reading as a required check due in "
    "5 minutes; the pre-dose check is met only by readings measured before the dose and a "
    "complete pre-dose set is BP systolic and diastolic, HR and SpO2 (SPEC §G3, §M6); each "
    "session owes its own next-day safety call, an overdue one is never superseded (SPEC §F1a); "
    "late entries are marked after 10 minutes (SPEC §M3); the modified Aldrete scoring is stated "
    "(SPEC §M9)."
)
CHANGE_SUMMARIES = {
    "iv-ketamine": "Version 2 of the default protocol (SPEC §D). "
    + COMMON_CHANGES
    + " The GP physical check at 28 days records a blood pressure taken in person.",
    "esketamine-rems": "Version 2 of the default protocol (SPEC §D). "
    + COMMON_CHANGES
    + " PHQ-9/GAD-7 fall due every 2 weeks of induction and the end-of-induction review at "
    "week 4, both counted from the course start (SPEC §F1a); the REMS monitoring form is due "
    "within 7 days and its BP at 40 minutes is check bp_40 (SPEC §F6, §M11); not under 18 "
    "without a prescriber's override (SPEC §A4).",
}


def _shipped_v1(slug):
    """Version 1 as each revision of 0002 shipped it: the frozen copy, then with each later
    addition undone in turn (per_session on the REMS form, the 35–50 min window of bp_40, the
    pre-dose vitals age), back to the original of the commit that created 0002."""
    frozen = importlib.import_module("protocols.migrations.0002_default_protocols_roles_guards")
    document = copy.deepcopy(dict((s, r) for s, _, r in frozen.DEFAULT_PROTOCOLS_V1)[slug])
    variants = [copy.deepcopy(document)]
    for followup in document["followups"]:
        followup.pop("per_session", None)
    variants.append(copy.deepcopy(document))
    for check in document["schedule"]:
        if check["code"] == "bp_40":
            check.pop("window_before_minutes", None)
    variants.append(copy.deepcopy(document))
    document["dose"].pop("predose_vitals_max_age_minutes", None)
    variants.append(document)
    return variants


def publish_version_2(apps, schema_editor):
    User = apps.get_model("clinic", "User")
    Protocol = apps.get_model("protocols", "Protocol")
    ProtocolVersion = apps.get_model("protocols", "ProtocolVersion")
    robot = User.objects.get(username=settings.SERVICE_ACCOUNT_USERNAME)
    now = timezone.now()
    for slug, rules in DEFAULT_PROTOCOLS_V2:
        protocol = Protocol.objects.filter(slug=slug).first()
        if protocol is None:
            continue
        latest = protocol.versions.order_by("-version").first()
        if latest is None or latest.rules not in _shipped_v1(slug):
            continue  # changed by the clinic: never overwrite its decisions
        ProtocolVersion.objects.create(
            protocol=protocol,
            version=protocol.versions.aggregate(n=Max("version"))["n"] + 1,
            rules=rules,
            change_summary=CHANGE_SUMMARIES[slug],
            created_by=robot,
            published_at=now,
            published_by=robot,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("protocols", "0005_course_age_override_cssrs_time"),
        ("clinic", "0003_signatures_addenda_notifications"),
    ]

    operations = [
        # Versions are never deleted: going back leaves version 2 in place.
        migrations.RunPython(publish_version_2, migrations.RunPython.noop),
    ]
