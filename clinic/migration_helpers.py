"""Helpers for data migrations: grant each role its permissions (SPEC §U).

Each migration passes its own frozen map, so a later change here never rewrites history.
"""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.db import migrations


def grant_permissions(role_permissions: dict[str, list[str]], *, replace: bool = False):
    """A RunPython that gives each role group the listed permissions (creating the group).

    Permissions are created after `migrate` normally; they are created here first so the grants
    can refer to models of the same migration run.
    """

    def forwards(apps, schema_editor):
        for app_config in apps.get_app_configs():
            app_config.models_module = True
            create_permissions(app_config, apps=apps, verbosity=0)
            app_config.models_module = None
        Group = apps.get_model("auth", "Group")
        Permission = apps.get_model("auth", "Permission")
        for role, codes in role_permissions.items():
            group, _ = Group.objects.get_or_create(name=role)
            permissions = []
            for code in codes:
                app_label, codename = code.split(".")
                permissions.append(
                    Permission.objects.get(content_type__app_label=app_label, codename=codename)
                )
            if replace:
                group.permissions.set(permissions)
            else:
                group.permissions.add(*permissions)

    return migrations.RunPython(forwards, migrations.RunPython.noop)
