"""History, signatures, the access log and the audit tables are append-only (SPEC §C2);
administrators read the audit trail and the compliance dashboard (SPEC §U)."""

from django.db import migrations

from clinic.db import audit_append_only
from clinic.migration_helpers import grant_permissions

PROTECTED_TABLES = [
    # simple-history's tables, one per tracked model (and User.sites)
    "clinic_historicalsite",
    "clinic_historicaluser",
    "clinic_historicaluser_sites",
    "clinic_historicaladdendum",
    "patients_historicalpatient",
    "patients_historicalconsenttemplate",
    "patients_historicalconsentrecord",
    "protocols_historicalprotocol",
    "protocols_historicalprotocolversion",
    "protocols_historicaltreatmentcourse",
    "protocols_historicalassessment",
    "monitoring_historicaltreatmentsession",
    "monitoring_historicaldruglot",
    "monitoring_historicalincident",
    "monitoring_historicaldoseadministration",
    "monitoring_historicalvitalreading",
    "monitoring_historicalalert",
    "monitoring_historicalrequiredcheck",
    "monitoring_historicalobservation",
    "monitoring_historicaldischarge",
    "followups_historicalfollowup",
    # evidence tables
    "clinic_signature",
    "clinic_signaturefailure",
    "monitoring_controlledsubstanceentry",
    # the audit trail itself (chain heads move, so audit_auditchain is not listed)
    "audit_accesslog",
    "audit_auditevent",
    "audit_verificationrun",
    "audit_finding",
]

ROLE_PERMISSIONS = {
    "Administrator": [
        "audit.view_auditevent",
        "audit.view_accesslog",
        "audit.view_verificationrun",
        "audit.view_compliance",
    ],
}


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_audit_trail"),
        ("clinic", "0005_site_quiet_hours"),
        ("patients", "0002_published_templates_final"),
        ("protocols", "0004_addenda_by_signers_only"),
        ("monitoring", "0004_sqlite_check_triggers_restored"),
        ("followups", "0002_roles"),
    ]

    operations = [
        audit_append_only(*PROTECTED_TABLES),
        grant_permissions(ROLE_PERMISSIONS),
    ]
