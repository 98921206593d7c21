"""Step 3 views: the worklist, the follow-up form, missed / cancelled with a reason."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from audit.services import access_log
from clinic import signatures
from clinic.forms import apply_errors, form_data
from followups import services
from followups.forms import FollowUpForm, ReasonForm, side_effects_reported
from followups.permissions import (
    COMPLETE_PERMISSION,
    closing_refusal,
    completion_refusal,
    get_followup_for_user,
)
from followups.selectors import CONSENT_EXPIRY_NOTICE_DAYS, UPCOMING_DAYS, worklist_for_user
from protocols.forms import CourseStatusForm
from protocols.permissions import get_course_for_user


@require_GET
@permission_required("followups.view_followup", raise_exception=True)
def worklist(request: HttpRequest) -> HttpResponse:
    scope = request.GET.get("site", "current")
    site_id = request.site.pk if scope == "current" and request.site else None
    context = {
        "worklist": worklist_for_user(user=request.user, site_id=site_id),
        "scope": scope,
        "upcoming_days": UPCOMING_DAYS,
        "consent_notice_days": CONSENT_EXPIRY_NOTICE_DAYS,
        "now": timezone.now(),
    }
    return render(request, "followups/worklist.html", context)


def _read_only(request: HttpRequest, followup, *, refusal: str | None = None) -> HttpResponse:
    return render(
        request,
        "followups/detail.html",
        {
            "followup": followup,
            "signatures": signatures.signatures_for(followup),
            "side_effects": side_effects_reported(followup),
            "refusal": refusal,
        },
    )


@require_http_methods(["GET", "POST"])
def complete(request: HttpRequest, followup_id: int) -> HttpResponse:
    followup = get_followup_for_user(user=request.user, followup_id=followup_id)
    if followup.state != followup.State.OPEN:
        access_log(request=request, what="Follow-up", record=followup)
        return _read_only(request, followup)
    if not request.user.has_perm(COMPLETE_PERMISSION):
        raise PermissionDenied
    # Who may complete it is decided once (the service and the page ask the same question).
    refusal = completion_refusal(request.user, followup)
    if refusal is not None:
        if request.method == "POST":
            raise PermissionDenied(refusal)
        access_log(request=request, what="Follow-up", record=followup)
        return _read_only(request, followup, refusal=refusal)
    if request.method == "GET":
        access_log(request=request, what="Follow-up", record=followup)
    scales = services.scales_due(followup)
    form = FollowUpForm(form_data(request), followup=followup, user=request.user, scales=scales)
    if request.method == "POST" and form.is_valid():
        try:
            services.followup_complete(
                followup=followup,
                acting_user=request.user,
                password=form.cleaned_data.get("password"),
                **form.service_fields(),
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, f"{followup.label} completed.")
            return redirect("followups:worklist")
    return render(
        request,
        "followups/form.html",
        {
            "form": form,
            "followup": followup,
            "scales": scales,
            "now": timezone.now(),
        },
    )


@require_http_methods(["GET", "POST"])
def missed(request: HttpRequest, followup_id: int) -> HttpResponse:
    followup = get_followup_for_user(
        user=request.user, followup_id=followup_id, permission=COMPLETE_PERMISSION
    )
    if followup.state != followup.State.OPEN:
        refusal = services.FOLLOWUP_CLOSED
        return render(request, "followups/missed.html", {"followup": followup, "refusal": refusal})
    refusal = closing_refusal(request.user, followup)
    if refusal is not None:
        if request.method == "POST":
            raise PermissionDenied(refusal)
        return render(request, "followups/missed.html", {"followup": followup, "refusal": refusal})
    form = ReasonForm(form_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.followup_mark_missed(
                followup=followup, acting_user=request.user, reason=form.cleaned_data["reason"]
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Recorded as missed.")
            return redirect("followups:worklist")
    return render(request, "followups/missed.html", {"form": form, "followup": followup})


# --- Course status (Step 1 record, Step 3 plan) -----------------------------------------------
#
# Completing a course plans its follow-ups (SPEC §F1), so the page lives with Step 3: followups
# sits above protocols in the layers and may call both.


@require_http_methods(["GET", "POST"])
def course_status(request: HttpRequest, course_id: int) -> HttpResponse:
    course = get_course_for_user(
        user=request.user, course_id=course_id, permission="protocols.change_treatmentcourse"
    )
    form = CourseStatusForm(form_data(request), initial={"status": course.status})
    if request.method == "POST" and form.is_valid():
        try:
            # Completing a course plans its follow-ups (SPEC §F1): the Step 3 service does both.
            services.course_set_status_with_plan(
                course=course, acting_user=request.user, **form.cleaned_data
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Course status changed.")
            return redirect("patients:chart", patient_id=course.patient_id)
    return render(request, "protocols/course_status.html", {"form": form, "course": course})
