"""Object access for Step 2: 404 outside the user's sites, 403 without the right."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from clinic.models import Role, User
from monitoring.models import Alert, DrugLot, RequiredCheck, TreatmentSession, VitalReading


def _require(user: User, permission: str) -> None:
    if not user.has_perm(permission):
        raise PermissionDenied


def get_session_for_user(
    *, user: User, session_id: int, permission: str = "monitoring.view_treatmentsession"
) -> TreatmentSession:
    session = get_object_or_404(
        TreatmentSession.objects.select_related(
            "patient__home_site",
            "site",
            "course__protocol_version__protocol",
            "supervising_clinician",
            "checked_in_by",
            "predose_decision_by",
        ),
        pk=session_id,
        site_id__in=user.site_ids,
    )
    _require(user, permission)
    return session


def get_reading_for_user(*, user: User, reading_id: int, permission: str) -> VitalReading:
    reading = get_object_or_404(
        VitalReading.objects.select_related("session"),
        pk=reading_id,
        session__site_id__in=user.site_ids,
    )
    _require(user, permission)
    return reading


def get_alert_for_user(*, user: User, alert_id: int, permission: str) -> Alert:
    alert = get_object_or_404(
        Alert.objects.select_related("session"), pk=alert_id, session__site_id__in=user.site_ids
    )
    _require(user, permission)
    return alert


def get_check_for_user(*, user: User, check_id: int, permission: str) -> RequiredCheck:
    check = get_object_or_404(
        RequiredCheck.objects.select_related("session"),
        pk=check_id,
        session__site_id__in=user.site_ids,
    )
    _require(user, permission)
    return check


def get_lot_for_user(*, user: User, lot_id: int, permission: str) -> DrugLot:
    lot = get_object_or_404(DrugLot, pk=lot_id, site_id__in=user.site_ids)
    _require(user, permission)
    return lot


DISCHARGE_PERMISSION = "monitoring.discharge_treatmentsession"


def may_sign_discharge(user: User, session: TreatmentSession) -> bool:
    """Who may sign a discharge (SPEC §M9, §U): an active member of the session's site who
    holds the discharge permission (anesthesiologist, psychiatrist), or a nurse when the
    session's protocol version allows nurse discharge. The one rule: the service, the view and
    the template all ask here."""
    if not user.is_active or session.site_id not in user.site_ids:
        return False
    if user.has_perm(DISCHARGE_PERMISSION) and (
        user.has_role(Role.ANESTHESIOLOGIST) or user.has_role(Role.PSYCHIATRIST)
    ):
        return True
    return bool(session.rules.discharge.get("nurse_may_discharge")) and user.has_role(Role.NURSE)
