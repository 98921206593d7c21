"""A published protocol version is final in the database too (SPEC §G1)."""

from django.db import migrations

from clinic.db import refuse_changes_once_set


class Migration(migrations.Migration):
    dependencies = [("protocols", "0002_default_protocols_roles_guards")]

    operations = [
        refuse_changes_once_set(
            "protocols_protocolversion",
            "published_at",
            watched=("protocol_id", "version", "rules", "change_summary", "published_by_id"),
        )
    ]
