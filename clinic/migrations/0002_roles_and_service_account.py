"""Roles of SPEC §U as groups with explicit permissions, and the service account.

The permission lists are frozen here; later migrations that add models add their own grants.
"""

from django.conf import settings
from django.db import migrations

from clinic.migration_helpers import grant_permissions

ROLE_PERMISSIONS = {
    "Nurse": [
        "patients.view_patient",
        "patients.add_patient",
        "patients.change_patient",
        "patients.void_patient",
        "patients.view_consentrecord",
        "patients.add_consentrecord",
        "patients.withdraw_consentrecord",
        "patients.view_consenttemplate",
    ],
    "Psychiatrist": [
        "patients.view_patient",
        "patients.add_patient",
        "patients.change_patient",
        "patients.void_patient",
        "patients.view_consentrecord",
        "patients.add_consentrecord",
        "patients.withdraw_consentrecord",
        "patients.view_consenttemplate",
    ],
    "Anesthesiologist": [
        "patients.view_patient",
        "patients.change_patient",
        "patients.view_consentrecord",
    ],
    "General practitioner": [
        "patients.view_patient",
        "patients.view_consentrecord",
    ],
    # Reads everything, manages sites, staff and consent documents; never writes clinical data.
    "Administrator": [
        "patients.view_patient",
        "patients.view_consentrecord",
        "patients.view_consenttemplate",
        "patients.add_consenttemplate",
        "patients.change_consenttemplate",
        "patients.publish_consenttemplate",
        "clinic.view_site",
        "clinic.add_site",
        "clinic.change_site",
        "clinic.view_user",
        "clinic.add_user",
        "clinic.change_user",
        "auth.view_group",
    ],
}


def create_service_account(apps, schema_editor):
    User = apps.get_model("clinic", "User")
    User.objects.get_or_create(
        username=settings.SERVICE_ACCOUNT_USERNAME,
        defaults={
            "first_name": "Vigil",
            "last_name": "service account",
            "is_service_account": True,
            # An unusable password (Django's "!" prefix): the account cannot log in.
            "password": "!service-account-cannot-log-in",
        },
    )


class Migration(migrations.Migration):
    dependencies = [
        ("clinic", "0001_initial"),
        ("patients", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        grant_permissions(ROLE_PERMISSIONS, replace=True),
        migrations.RunPython(create_service_account, migrations.RunPython.noop),
    ]
