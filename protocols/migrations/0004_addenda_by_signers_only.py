"""Anesthesiologists do not sign psychiatric assessments (SPEC §U), so they add no addenda
to them either; addenda stay with nurses (authors) and psychiatrists (signers)."""

from django.db import migrations


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permission = Permission.objects.get(content_type__app_label="clinic", codename="add_addendum")
    Group.objects.get(name="Anesthesiologist").permissions.remove(permission)


class Migration(migrations.Migration):
    dependencies = [("protocols", "0003_published_versions_final")]

    operations = [migrations.RunPython(revoke, migrations.RunPython.noop)]
