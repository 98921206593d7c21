"""Step 3 permissions per role (SPEC §U)."""

from django.db import migrations

from clinic.db import refuse_locked_changes
from clinic.migration_helpers import grant_permissions

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


class Migration(migrations.Migration):
    dependencies = [
        ("followups", "0001_followups_reminders"),
        ("clinic", "0002_roles_and_service_account"),
    ]

    operations = [
        grant_permissions(ROLE_PERMISSIONS),
        # Signed psychiatric reviews are locked like every signed record (SPEC §S3).
        refuse_locked_changes("followups_followup"),
    ]
