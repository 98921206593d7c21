"""A published consent template is final in the database too (SPEC §P2)."""

from django.db import migrations

from clinic.db import refuse_changes_once_set


class Migration(migrations.Migration):
    dependencies = [("patients", "0001_initial")]

    operations = [
        refuse_changes_once_set(
            "patients_consenttemplate",
            "published_at",
            watched=("kind", "version", "title", "text", "validity_days", "requires_reconsent",
                     "text_sha256", "published_by_id"),
        )
    ]
