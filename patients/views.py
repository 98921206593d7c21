"""Patient register, chart and consent views: authorize, bind, call one service, respond."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from audit.services import access_log
from clinic.forms import apply_errors, form_data, form_files
from clinic.pagination import keyset_page
from followups.selectors import followups_for_patient
from monitoring.selectors import sessions_for_patient
from patients import services
from patients.forms import ConsentRecordForm, ConsentTemplateForm, PatientForm, ReasonForm
from patients.models import ConsentTemplate
from patients.permissions import (
    get_consent_for_user,
    get_patient_for_user,
    get_template_for_user,
    get_writable_consent_for_user,
    get_writable_patient_for_user,
)
from patients.selectors import (
    consent_list_for_patient,
    patient_consent_summary,
    patient_list_for_user,
)
from protocols.selectors import assessments_for_patient, courses_for_patient, instrument_trend

PAGE_SIZE = 25


@require_GET
@permission_required("patients.view_patient", raise_exception=True)
def patient_list(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")[:100]
    scope = request.GET.get("site", "current")
    site_id = request.site.pk if scope == "current" and request.site else None
    patients = patient_list_for_user(user=request.user, query=query, site_id=site_id)
    page = keyset_page(
        patients,
        fields=("family_name", "given_name", "id"),
        cursor=request.GET.get("after"),
        size=PAGE_SIZE,
    )
    context = {"page": page, "query": query, "scope": scope}
    # One partial serves the full page and the search-as-you-type refresh.
    is_htmx = request.headers.get("HX-Request") == "true"
    template = "patients/partials/patient_rows.html" if is_htmx else "patients/list.html"
    return render(request, template, context)


@require_http_methods(["GET", "POST"])
@permission_required("patients.add_patient", raise_exception=True)
def patient_register(request: HttpRequest) -> HttpResponse:
    if request.site is None:
        raise Http404("You belong to no site.")
    form = PatientForm(form_data(request), site=request.site)
    if request.method == "POST" and form.is_valid():
        try:
            patient = services.patient_register(
                site=request.site, acting_user=request.user, **form.cleaned_data
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Patient registered.")
            return redirect("patients:chart", patient_id=patient.pk)
    return render(request, "patients/patient_form.html", {"form": form, "patient": None})


@require_GET
def patient_chart(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = get_patient_for_user(user=request.user, patient_id=patient_id)
    access_log(request=request, what="Patient chart", record=patient)
    assessments = assessments_for_patient(patient=patient)
    followups = followups_for_patient(patient=patient)
    now = timezone.now()
    for followup in followups:
        followup.status_now = followup.display_status(now)
    context = {
        "patient": patient,
        "consent_summary": patient_consent_summary(patient=patient),
        "consents": consent_list_for_patient(patient=patient)[:50],
        "courses": courses_for_patient(patient=patient),
        "assessments": assessments,
        "trend": instrument_trend(assessments=assessments, followups=followups),
        "followups": followups,
        "sessions": sessions_for_patient(patient=patient),
    }
    return render(request, "patients/chart.html", context)


@require_http_methods(["GET", "POST"])
def patient_edit(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = get_writable_patient_for_user(user=request.user, patient_id=patient_id)
    if patient.is_voided:
        raise Http404("Voided registrations cannot be edited.")
    form = PatientForm(form_data(request), instance=patient, site=patient.home_site)
    if request.method == "POST" and form.is_valid():
        try:
            services.patient_update(patient=patient, acting_user=request.user, **form.cleaned_data)
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Patient details saved.")
            return redirect("patients:chart", patient_id=patient.pk)
    return render(request, "patients/patient_form.html", {"form": form, "patient": patient})


@require_http_methods(["GET", "POST"])
def patient_void(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = get_writable_patient_for_user(
        user=request.user, patient_id=patient_id, permission="patients.void_patient"
    )
    form = ReasonForm(form_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.patient_void(
                patient=patient, acting_user=request.user, reason=form.cleaned_data["reason"]
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Registration voided. It is hidden from lists and kept.")
            return redirect("patients:list")
    return render(request, "patients/void.html", {"form": form, "patient": patient})


@require_http_methods(["GET", "POST"])
def consent_new(request: HttpRequest, patient_id: int) -> HttpResponse:
    patient = get_writable_patient_for_user(
        user=request.user, patient_id=patient_id, permission="patients.add_consentrecord"
    )
    if patient.is_voided:
        raise Http404("Voided registrations take no new records.")
    form = ConsentRecordForm(form_data(request), form_files(request), patient=patient)
    if request.method == "POST" and form.is_valid():
        try:
            services.consent_record(patient=patient, acting_user=request.user, **form.cleaned_data)
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Consent recorded, witnessed by you.")
            return redirect("patients:chart", patient_id=patient.pk)
    return render(request, "patients/consent_form.html", {"form": form, "patient": patient})


@require_http_methods(["GET", "POST"])
def consent_withdraw(request: HttpRequest, consent_id: int) -> HttpResponse:
    consent = get_writable_consent_for_user(
        user=request.user, consent_id=consent_id, permission="patients.withdraw_consentrecord"
    )
    form = ReasonForm(form_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.consent_withdraw(
                consent=consent, acting_user=request.user, reason=form.cleaned_data["reason"]
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Withdrawal recorded. It takes effect at once.")
            return redirect("patients:chart", patient_id=consent.patient_id)
    return render(request, "patients/consent_withdraw.html", {"form": form, "consent": consent})


@require_GET
def consent_scan(request: HttpRequest, consent_id: int) -> FileResponse:
    consent = get_consent_for_user(user=request.user, consent_id=consent_id)
    if not consent.scan:
        raise Http404("No scan attached.")
    access_log(request=request, what="Consent scan", record=consent)
    response = FileResponse(
        consent.scan.open("rb"), content_type=consent.scan_content_type, as_attachment=False
    )
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response


# --- Consent templates (administrators) --------------------------------------------------------


@require_GET
@permission_required("patients.view_consenttemplate", raise_exception=True)
def template_list(request: HttpRequest) -> HttpResponse:
    templates = ConsentTemplate.objects.select_related("published_by").order_by("kind", "-version")
    return render(request, "patients/template_list.html", {"templates": templates})


@require_http_methods(["GET", "POST"])
@permission_required("patients.add_consenttemplate", raise_exception=True)
def template_new(request: HttpRequest) -> HttpResponse:
    form = ConsentTemplateForm(form_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            template = services.consent_template_create(
                acting_user=request.user, **form.cleaned_data
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, f"Draft {template} created. Publish it when it is final.")
            return redirect("patients:template_detail", template_id=template.pk)
    return render(request, "patients/template_form.html", {"form": form, "template": None})


@require_GET
def template_detail(request: HttpRequest, template_id: int) -> HttpResponse:
    template = get_template_for_user(
        user=request.user, template_id=template_id, permission="patients.view_consenttemplate"
    )
    return render(request, "patients/template_detail.html", {"template": template})


@require_http_methods(["GET", "POST"])
def template_edit(request: HttpRequest, template_id: int) -> HttpResponse:
    template = get_template_for_user(
        user=request.user, template_id=template_id, permission="patients.change_consenttemplate"
    )
    if template.is_published:
        messages.error(request, services.TEMPLATE_PUBLISHED)
        return redirect("patients:template_detail", template_id=template.pk)
    form = ConsentTemplateForm(form_data(request), instance=template)
    if request.method == "POST" and form.is_valid():
        try:
            services.consent_template_update(
                template=template, acting_user=request.user, **form.cleaned_data
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Draft saved.")
            return redirect("patients:template_detail", template_id=template.pk)
    return render(request, "patients/template_form.html", {"form": form, "template": template})


@require_POST
def template_publish(request: HttpRequest, template_id: int) -> HttpResponse:
    template = get_template_for_user(
        user=request.user, template_id=template_id, permission="patients.publish_consenttemplate"
    )
    try:
        services.consent_template_publish(template=template, acting_user=request.user)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"{template} published.")
    return redirect("patients:template_detail", template_id=template.pk)
