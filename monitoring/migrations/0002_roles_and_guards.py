"""Step 2 permissions per role (SPEC §U) and the database guards for locked sessions."""

from django.db import migrations

from clinic.db import append_only, refuse_changes_to_children_of_locked, refuse_locked_changes
from clinic.migration_helpers import grant_permissions

VIEW = [
    "monitoring.view_treatmentsession",
    "monitoring.view_doseadministration",
    "monitoring.view_vitalreading",
    "monitoring.view_alert",
    "monitoring.view_requiredcheck",
    "monitoring.view_observation",
    "monitoring.view_discharge",
]
CHAIRSIDE = ["monitoring.add_treatmentsession", "monitoring.dose_treatmentsession"]
ROLE_PERMISSIONS = {
    "Nurse": [
        *VIEW,
        *CHAIRSIDE,
        "monitoring.add_controlledsubstanceentry",
        "monitoring.add_druglot",
        "monitoring.view_druglot",
    ],
    "Psychiatrist": [
        *VIEW,
        *CHAIRSIDE,
        "monitoring.acknowledge_alert",
        "monitoring.discharge_treatmentsession",
        "monitoring.decide_predose",
        "monitoring.add_controlledsubstanceentry",
        "monitoring.view_druglot",
    ],
    "Anesthesiologist": [
        *VIEW,
        "monitoring.dose_treatmentsession",
        "monitoring.acknowledge_alert",
        "monitoring.discharge_treatmentsession",
        "monitoring.add_controlledsubstanceentry",
        "monitoring.view_druglot",
    ],
    "General practitioner": ["monitoring.view_treatmentsession"],
    "Administrator": [
        *VIEW,
        "monitoring.view_controlledsubstanceentry",
        "monitoring.view_druglot",
        "monitoring.add_druglot",
        "monitoring.view_incident",
    ],
}


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0001_sessions_doses_vitals"),
        ("protocols", "0002_default_protocols_roles_guards"),
    ]

    operations = [
        grant_permissions(ROLE_PERMISSIONS),
        refuse_locked_changes("monitoring_treatmentsession"),
        refuse_changes_to_children_of_locked(
            "monitoring_treatmentsession",
            "monitoring_doseadministration",
            "monitoring_vitalreading",
            "monitoring_alert",
            "monitoring_requiredcheck",
            "monitoring_observation",
            "monitoring_discharge",
        ),
        append_only("monitoring_controlledsubstanceentry"),
    ]
