"""Which site and patient each audited row belongs to, for the viewer's filters.

Declared per model as attribute paths on the live record. A test fails when a history-tracked
or chained model has no entry, so a new model cannot slip out of the audit viewer.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.contenttypes.models import ContentType
from django.db import models


@dataclass(frozen=True)
class Scope:
    site: str | None = None  # attribute path to the site id
    patient: str | None = None  # attribute path to the patient id
    via_record: bool = False  # content_type / object_id point at the record that scopes it


_SESSION_CHILD = Scope(site="session.site_id", patient="session.patient_id")

SCOPES: dict[str, Scope] = {
    "clinic.site": Scope(site="pk"),
    "clinic.user": Scope(),
    "clinic.addendum": Scope(via_record=True),
    "clinic.signature": Scope(via_record=True),
    "clinic.signaturefailure": Scope(via_record=True),
    "patients.patient": Scope(site="home_site_id", patient="pk"),
    "patients.consenttemplate": Scope(),
    "patients.consentrecord": Scope(site="patient.home_site_id", patient="patient_id"),
    "protocols.protocol": Scope(),
    "protocols.protocolversion": Scope(),
    "protocols.treatmentcourse": Scope(site="patient.home_site_id", patient="patient_id"),
    "protocols.assessment": Scope(site="patient.home_site_id", patient="patient_id"),
    "monitoring.treatmentsession": Scope(site="site_id", patient="patient_id"),
    "monitoring.doseadministration": _SESSION_CHILD,
    "monitoring.vitalreading": _SESSION_CHILD,
    "monitoring.alert": _SESSION_CHILD,
    "monitoring.requiredcheck": _SESSION_CHILD,
    "monitoring.observation": _SESSION_CHILD,
    "monitoring.discharge": _SESSION_CHILD,
    "monitoring.druglot": Scope(site="site_id"),
    "monitoring.controlledsubstanceentry": Scope(site="lot.site_id", patient="patient_id"),
    "monitoring.incident": Scope(site="site_id"),
    "followups.followup": Scope(site="site_id", patient="patient_id"),
}


def _follow(record: models.Model, path: str | None):
    if path is None:
        return None
    value = record
    for name in path.split("."):
        value = getattr(value, name, None)
        if value is None:
            return None
    return value


def scope_of(record: models.Model) -> tuple[int | None, int | None]:
    """(site id, patient id) of a record; (None, None) for clinic-wide records."""
    scope = SCOPES[record._meta.label_lower]
    if scope.via_record:
        target = target_of(record)
        return scope_of(target) if target is not None else (None, None)
    return _follow(record, scope.site), _follow(record, scope.patient)


def target_of(record: models.Model) -> models.Model | None:
    """The record a signature, failed attempt or addendum is about."""
    model = ContentType.objects.get_for_id(record.content_type_id).model_class()
    return model._base_manager.filter(pk=record.object_id).first() if model else None
