"""Follow-ups keep what their rule said when planned (SPEC §F1a, §F2, §D):

- `anchor`: what the due time counts from; occurrences counted from the course start are
  planned once per course (a unique constraint), never again by a later discharge;
- `requires_bp_in_person`: the rule's in-person blood-pressure requirement (it replaces the
  "code starts with gp" test); open GP checks planned before this migration were planned under
  that test, so they keep it;
- `gad7_evaluation_flag`: GAD-7 >= 10, stored when the follow-up is written.

None of them goes to the history table or the signed content (see FollowUp.LATER_FIELDS).
SQLite adds a NOT NULL column by rebuilding the table, which drops its lock trigger: it is saved
before and created again after. PostgreSQL keeps triggers across ALTER TABLE.
"""

from django.db import migrations, models

TABLE = "followups_followup"
TRIGGERS = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s"
_saved: dict[str, str] = {}


def save_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(TRIGGERS, [TABLE])
        _saved.update(dict(cursor.fetchall()))


def restore_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(TRIGGERS, [TABLE])
        present = {name for name, _ in cursor.fetchall()}
    for name, sql in _saved.items():
        if name not in present:
            schema_editor.execute(sql, params=None)


def keep_what_open_rows_were_planned_with(apps, schema_editor):
    FollowUp = apps.get_model("followups", "FollowUp")
    unlocked_open = FollowUp.objects.filter(state="open", locked_at__isnull=True)
    unlocked_open.filter(code__startswith="gp").update(requires_bp_in_person=True)
    # Site duties (the controlled-substance inventory) count from no clinical event.
    FollowUp.objects.filter(patient__isnull=True, locked_at__isnull=True).update(anchor="")


class Migration(migrations.Migration):
    dependencies = [
        ("followups", "0003_compliance_indexes"),
        # After the lock trigger of 0002 and the audit guards exist: this one re-creates them.
        ("audit", "0002_append_only_and_roles"),
    ]

    operations = [
        migrations.RunPython(save_triggers, migrations.RunPython.noop),
        migrations.AddField(
            model_name="followup",
            name="anchor",
            field=models.CharField(
                blank=True,
                choices=[
                    ("discharge", "The session's discharge"),
                    ("course_start", "The course start"),
                    ("course_completion", "The course's completion"),
                ],
                default="discharge",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="followup",
            name="gad7_evaluation_flag",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="followup",
            name="requires_bp_in_person",
            field=models.BooleanField(
                default=False, help_text="An in-person contact must record the blood pressure."
            ),
        ),
        migrations.AddIndex(
            model_name="followup",
            index=models.Index(
                condition=models.Q(("gad7_evaluation_flag", True)),
                fields=["course", "completed_at"],
                name="followup_gad7_flagged",
            ),
        ),
        migrations.AddConstraint(
            model_name="followup",
            constraint=models.UniqueConstraint(
                condition=models.Q(("anchor", "course_start"), ("course__isnull", False)),
                fields=("course", "code"),
                name="followup_once_per_course_anchored",
            ),
        ),
        migrations.RunPython(restore_triggers, migrations.RunPython.noop),
        migrations.RunPython(keep_what_open_rows_were_planned_with, migrations.RunPython.noop),
    ]
