"""Step 3 permissions per role (SPEC §U)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from clinic.db import refuse_locked_changes

ROLE_PERMISSIONS = {
    "Nurse": ["followups.view_followup", "followups.complete_followup"],
    "Psychiatrist": ["followups.view_followup", "followups.complete_followup",
                     "followups.sign_followup"],
    "Anesthesiologist": ["followups.view_followup"],
    "General practitioner": ["followups.view_followup", "followups.complete_followup"],
    # Administrators file the REMS monitoring form and the inventory duty assigned to them.
    "Administrator": ["followups.view_followup", "followups.complete_followup",
                      "followups.view_reminder"],
}


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codes in ROLE_PERMISSIONS.items():
        group = Group.objects.get(name=role)
        for code in codes:
            app_label, codename = code.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


class Migration(migrations.Migration):
    dependencies = [
        ("followups", "0001_followups_reminders"),
        ("clinic", "0002_roles_and_service_account"),
    ]

    operations = [
        migrations.RunPython(grant, migrations.RunPython.noop),
        # Signed psychiatric reviews are locked like every signed record (SPEC §S3).
        refuse_locked_changes("followups_followup"),
    ]
