"""Step 1 views: protocols, courses, assessments, sign-off. Thin: authorize, bind, one service."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from audit.services import access_log
from clinic import signatures
from clinic.forms import apply_errors, form_data
from patients.permissions import get_writable_patient_for_user
from protocols import services
from protocols.forms import (
    AddendumForm,
    AssessmentForm,
    CourseForm,
    ProtocolVersionForm,
    SignAssessmentForm,
    version_rules_json,
)
from protocols.models import Assessment, Protocol
from protocols.permissions import (
    get_assessment_for_user,
    get_course_for_user,
    get_protocol_for_user,
    get_version_for_user,
)
from protocols.rules import rules_json_schema
from protocols.selectors import signoff_queue_for_user

# --- Protocols ----------------------------------------------------------------------------------


@require_GET
@permission_required("protocols.view_protocolversion", raise_exception=True)
def protocol_list(request: HttpRequest) -> HttpResponse:
    protocols = Protocol.objects.prefetch_related("versions__published_by").order_by("name")
    return render(request, "protocols/protocol_list.html", {"protocols": protocols})


@require_GET
def version_detail(request: HttpRequest, version_id: int) -> HttpResponse:
    version = get_version_for_user(
        user=request.user, version_id=version_id, permission="protocols.view_protocolversion"
    )
    return render(
        request, "protocols/version_detail.html", {"version": version, "rules": version.parsed}
    )


@require_http_methods(["GET", "POST"])
def version_new(request: HttpRequest, protocol_id: int) -> HttpResponse:
    protocol = get_protocol_for_user(
        user=request.user, protocol_id=protocol_id, permission="protocols.add_protocolversion"
    )
    latest = protocol.versions.order_by("-version").first()
    initial = {"rules": version_rules_json(latest)} if latest else {}
    form = ProtocolVersionForm(form_data(request), initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            version = services.protocol_version_create(
                protocol=protocol, acting_user=request.user, **form.cleaned_data
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, f"Draft {version} created. Publish it when it is final.")
            return redirect("protocols:version_detail", version_id=version.pk)
    return render(
        request,
        "protocols/version_form.html",
        {"form": form, "protocol": protocol, "version": None},
    )


@require_http_methods(["GET", "POST"])
def version_edit(request: HttpRequest, version_id: int) -> HttpResponse:
    version = get_version_for_user(
        user=request.user, version_id=version_id, permission="protocols.change_protocolversion"
    )
    if version.is_published:
        messages.error(request, services.VERSION_PUBLISHED)
        return redirect("protocols:version_detail", version_id=version.pk)
    form = ProtocolVersionForm(
        request.POST or None,
        initial={"rules": version_rules_json(version), "change_summary": version.change_summary},
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.protocol_version_update(
                version=version, acting_user=request.user, **form.cleaned_data
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Draft saved.")
            return redirect("protocols:version_detail", version_id=version.pk)
    return render(
        request,
        "protocols/version_form.html",
        {"form": form, "protocol": version.protocol, "version": version},
    )


@require_GET
def rules_schema(request: HttpRequest) -> JsonResponse:
    """The JSON Schema of a protocol version's rules (SPEC §G1), from the models that validate
    them: for the rules editor and for anyone preparing a version outside Vigil."""
    return JsonResponse(rules_json_schema(), json_dumps_params={"ensure_ascii": False})


@require_POST
def version_publish(request: HttpRequest, version_id: int) -> HttpResponse:
    version = get_version_for_user(
        user=request.user, version_id=version_id, permission="protocols.publish_protocolversion"
    )
    try:
        services.protocol_version_publish(version=version, acting_user=request.user)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"{version} published. New courses are pinned to it.")
    return redirect("protocols:version_detail", version_id=version.pk)


# --- Treatment courses --------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def course_new(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = get_writable_patient_for_user(
        user=request.user, patient_id=patient_id, permission="protocols.add_treatmentcourse"
    )
    if patient.is_voided:
        raise Http404("Voided registrations take no new records.")
    form = CourseForm(form_data(request), patient=patient)
    if request.method == "POST" and form.is_valid():
        try:
            services.course_start(patient=patient, acting_user=request.user, **form.cleaned_data)
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Course opened. Next: the pre-treatment assessment.")
            return redirect("patients:chart", patient_id=patient.pk)
    return render(request, "protocols/course_form.html", {"form": form, "patient": patient})


# --- Assessments --------------------------------------------------------------------------------


@require_POST
def assessment_new(request: HttpRequest, course_id: int) -> HttpResponse:
    course = get_course_for_user(
        user=request.user, course_id=course_id, permission="protocols.add_assessment"
    )
    try:
        assessment = services.assessment_create(course=course, acting_user=request.user)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("patients:chart", patient_id=course.patient_id)
    return redirect("protocols:assessment_edit", assessment_id=assessment.pk)


@require_http_methods(["GET", "POST"])
def assessment_edit(request: HttpRequest, assessment_id: int) -> HttpResponse:
    assessment = get_assessment_for_user(
        user=request.user, assessment_id=assessment_id, permission="protocols.change_assessment"
    )
    if assessment.status not in {Assessment.Status.DRAFT, Assessment.Status.SUBMITTED}:
        messages.error(request, "This assessment is signed. Corrections are addenda.")
        return redirect("protocols:assessment_detail", assessment_id=assessment.pk)
    form = AssessmentForm(form_data(request), instance=assessment)
    if request.method == "POST" and form.is_valid():
        try:
            services.assessment_update(
                assessment=assessment, acting_user=request.user, **form.service_fields()
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            if "submit" in request.POST:
                return assessment_submit(request, assessment_id=assessment.pk)
            messages.success(request, "Draft saved.")
            return redirect("protocols:assessment_edit", assessment_id=assessment.pk)
    return render(
        request,
        "protocols/assessment_form.html",
        {
            "form": form,
            "assessment": assessment,
            "missing": services.assessment_missing_items(assessment),
        },
    )


@require_POST
def assessment_submit(request: HttpRequest, assessment_id: int) -> HttpResponse:
    assessment = get_assessment_for_user(
        user=request.user, assessment_id=assessment_id, permission="protocols.change_assessment"
    )
    try:
        services.assessment_submit(assessment=assessment, acting_user=request.user)
    except ValidationError as error:
        incomplete = any(getattr(e, "code", None) == "incomplete" for e in error.error_list)
        messages.error(
            request,
            "Not submitted: some items are missing (listed at the top)."
            if incomplete
            else " ".join(error.messages),
        )
        return redirect("protocols:assessment_edit", assessment_id=assessment.pk)
    messages.success(request, "Submitted. The responsible psychiatrist has been notified.")
    return redirect("protocols:assessment_detail", assessment_id=assessment.pk)


@require_GET
def assessment_detail(request: HttpRequest, assessment_id: int) -> HttpResponse:
    assessment = get_assessment_for_user(user=request.user, assessment_id=assessment_id)
    access_log(request=request, what="Assessment", record=assessment)
    return render(request, "protocols/assessment_detail.html", _assessment_context(assessment))


def _assessment_context(assessment: Assessment) -> dict:
    rules = assessment.course.protocol_version.parsed
    answers = assessment.contraindications or {}
    return {
        "assessment": assessment,
        "patient": assessment.patient,
        "signatures": signatures.signatures_for(assessment),
        "addenda": signatures.addenda_for(assessment),
        "contraindications": [(c, answers.get(c.code) or {}) for c in rules.contraindications],
        "absolute_present": services.absolute_contraindications_present(assessment),
        "missing": services.assessment_missing_items(assessment)
        if assessment.status == Assessment.Status.DRAFT
        else [],
    }


@require_http_methods(["GET", "POST"])
def assessment_sign(request: HttpRequest, assessment_id: int) -> HttpResponse:
    assessment = get_assessment_for_user(
        user=request.user, assessment_id=assessment_id, permission="protocols.sign_assessment"
    )
    if assessment.status != Assessment.Status.SUBMITTED:
        messages.error(request, services.ASSESSMENT_NOT_SUBMITTED)
        return redirect("protocols:assessment_detail", assessment_id=assessment.pk)
    form = SignAssessmentForm(form_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.assessment_sign(
                assessment=assessment,
                signer=request.user,
                password=form.cleaned_data["password"],
                approve=form.cleaned_data["decision"] == "approve",
                override_reason=form.cleaned_data["override_reason"],
            )
        except PermissionDenied:
            raise
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Signed. The assessment is locked.")
            return redirect("protocols:assessment_detail", assessment_id=assessment.pk)
    context = _assessment_context(assessment) | {"form": form}
    return render(request, "protocols/assessment_sign.html", context)


@require_http_methods(["GET", "POST"])
def addendum_new(request: HttpRequest, assessment_id: int) -> HttpResponse:
    assessment = get_assessment_for_user(
        user=request.user, assessment_id=assessment_id, permission="clinic.add_addendum"
    )
    if not assessment.is_locked:
        messages.error(request, "Addenda are for signed assessments; edit the draft instead.")
        return redirect("protocols:assessment_detail", assessment_id=assessment.pk)
    form = AddendumForm(form_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            signatures.addendum_add(record=assessment, author=request.user, **form.cleaned_data)
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Addendum signed and added under the original.")
            return redirect("protocols:assessment_detail", assessment_id=assessment.pk)
    return render(request, "protocols/addendum_form.html", {"form": form, "assessment": assessment})


@require_GET
@permission_required("protocols.sign_assessment", raise_exception=True)
def signoff_queue(request: HttpRequest) -> HttpResponse:
    return render(
        request, "protocols/signoff_queue.html", {"rows": signoff_queue_for_user(user=request.user)}
    )
