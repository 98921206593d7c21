"""0003 rebuilt monitoring_requiredcheck on SQLite, which dropped its lock triggers."""

from django.db import migrations

from clinic.db import refuse_changes_to_children_of_locked


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0003_check_window_before")]

    operations = [
        refuse_changes_to_children_of_locked(
            "monitoring_treatmentsession", "monitoring_requiredcheck", vendors=("sqlite",)
        ),
    ]
