"""Ship the two default protocols of SPEC §D, grant Step 1 permissions, install lock triggers."""

from django.conf import settings
from django.db import migrations
from django.utils import timezone

from clinic.db import append_only, refuse_locked_changes
from clinic.migration_helpers import grant_permissions
from protocols.defaults import DEFAULT_PROTOCOLS

ROLE_PERMISSIONS = {
    "Nurse": [
        "protocols.view_protocol",
        "protocols.view_protocolversion",
        "protocols.view_treatmentcourse",
        "protocols.add_treatmentcourse",
        "protocols.view_assessment",
        "protocols.add_assessment",
        "protocols.change_assessment",
        "clinic.add_addendum",
    ],
    "Psychiatrist": [
        "protocols.view_protocol",
        "protocols.view_protocolversion",
        "protocols.view_treatmentcourse",
        "protocols.add_treatmentcourse",
        "protocols.change_treatmentcourse",
        "protocols.view_assessment",
        "protocols.add_assessment",
        "protocols.change_assessment",
        "protocols.sign_assessment",
        "clinic.add_addendum",
    ],
    "Anesthesiologist": [
        "protocols.view_protocol",
        "protocols.view_protocolversion",
        "protocols.view_treatmentcourse",
        "protocols.view_assessment",
        "clinic.add_addendum",
    ],
    "General practitioner": [
        "protocols.view_protocol",
        "protocols.view_protocolversion",
        "protocols.view_treatmentcourse",
        "protocols.view_assessment",
    ],
    "Administrator": [
        "protocols.view_protocol",
        "protocols.view_protocolversion",
        "protocols.add_protocolversion",
        "protocols.change_protocolversion",
        "protocols.publish_protocolversion",
        "protocols.view_treatmentcourse",
        "protocols.view_assessment",
    ],
}


def ship_default_protocols(apps, schema_editor):
    User = apps.get_model("clinic", "User")
    Protocol = apps.get_model("protocols", "Protocol")
    ProtocolVersion = apps.get_model("protocols", "ProtocolVersion")
    robot = User.objects.get(username=settings.SERVICE_ACCOUNT_USERNAME)
    now = timezone.now()
    for slug, name, rules in DEFAULT_PROTOCOLS:
        protocol, _ = Protocol.objects.get_or_create(slug=slug, defaults={"name": name})
        ProtocolVersion.objects.get_or_create(
            protocol=protocol,
            version=1,
            defaults={
                "rules": rules,
                "change_summary": "Default protocol shipped with Vigil (SPEC §D).",
                "created_by": robot,
                "published_at": now,
                "published_by": robot,
            },
        )


class Migration(migrations.Migration):
    dependencies = [
        ("protocols", "0001_initial"),
        ("clinic", "0003_signatures_addenda_notifications"),
    ]

    operations = [
        grant_permissions(ROLE_PERMISSIONS),
        migrations.RunPython(ship_default_protocols, migrations.RunPython.noop),
        refuse_locked_changes("protocols_assessment", "clinic_addendum"),
        append_only("clinic_signature", "clinic_signaturefailure"),
    ]
