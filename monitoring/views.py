"""Step 2 views: chairside pages. Thin: authorize, bind, call one service, respond."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from audit.services import access_log, export_log
from clinic.exports import csv_response
from clinic.forms import apply_errors, form_data
from monitoring import gates, services
from monitoring.forms import (
    AcknowledgeForm,
    CheckInForm,
    DischargeForm,
    DoseCompleteForm,
    DoseForm,
    LotForm,
    ObservationForm,
    PredoseDecisionForm,
    ReasonForm,
    ScheduleForm,
    VitalsForm,
    WasteForm,
)
from monitoring.permissions import (
    get_alert_for_user,
    get_check_for_user,
    get_lot_for_user,
    get_reading_for_user,
    get_session_for_user,
    may_sign_discharge,
)
from monitoring.selectors import (
    floor_board_for_site,
    lots_for_site,
    register_for_user,
    rems_monitoring_form,
    session_page,
)
from protocols.permissions import get_course_for_user

DOSE = "monitoring.dose_treatmentsession"


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def session_url(session) -> str:
    return reverse("monitoring:session", kwargs={"session_id": session.pk})


def _to_session(session_id: int) -> HttpResponse:
    return redirect("monitoring:session", session_id=session_id)


def _form_page(request, template: str, form, session, title: str, button: str, **extra):
    context = {"form": form, "session": session, "title": title, "button": button, **extra}
    return render(request, template, context)


@require_http_methods(["GET", "POST"])
def session_new(request: HttpRequest, course_id: int) -> HttpResponse:
    course = get_course_for_user(
        user=request.user, course_id=course_id, permission="monitoring.add_treatmentsession"
    )
    form = ScheduleForm(form_data(request), patient=course.patient)
    if request.method == "POST" and form.is_valid():
        try:
            session = services.session_schedule(
                course=course, acting_user=request.user, **form.cleaned_data
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Session scheduled.")
            return _to_session(session.pk)
    return render(
        request,
        "monitoring/form.html",
        {
            "form": form,
            "session": None,
            "patient": course.patient,
            "title": f"Schedule a session — {course}",
            "button": "Schedule",
        },
    )


@require_GET
def session_detail(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_session_for_user(user=request.user, session_id=session_id)
    access_log(request=request, what="Session", record=session)
    context = {
        "page": session_page(session=session),
        "vitals_form": VitalsForm(),
        "may_discharge": may_sign_discharge(request.user, session),
    }
    return render(request, "monitoring/session.html", context)


@require_POST
def vitals_new(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_session_for_user(user=request.user, session_id=session_id, permission=DOSE)
    if not session.is_active:
        messages.error(request, "Nothing saved: this session is not in progress.")
        response = _to_session(session.pk)
        if _is_htmx(request):
            response = HttpResponse(status=204)
            response["HX-Redirect"] = session_url(session)
        return response
    form = VitalsForm(request.POST)
    saved = False
    if form.is_valid():
        values = {k: v for k, v in form.cleaned_data.items() if k != "measured_at"}
        try:
            services.vitals_record(
                session=session,
                acting_user=request.user,
                measured_at=form.cleaned_data["measured_at"],
                **values,
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            saved = True
    if not _is_htmx(request):
        if saved:
            messages.success(request, "Vitals saved.")
            return _to_session(session.pk)
        context = {"page": session_page(session=session), "vitals_form": form}
        return render(request, "monitoring/session.html", context, status=200)
    # htmx: the live part of the page, with a fresh form after a save (new token, empty fields).
    context = {
        "page": session_page(session=session),
        "vitals_form": VitalsForm() if saved else form,
        "just_saved": saved,
    }
    return render(request, "monitoring/partials/session_live.html", context)


@require_GET
def session_live(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_session_for_user(user=request.user, session_id=session_id)
    context = {"page": session_page(session=session), "vitals_form": VitalsForm()}
    return render(request, "monitoring/partials/session_live.html", context)


@require_http_methods(["GET", "POST"])
def check_in(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_session_for_user(user=request.user, session_id=session_id, permission=DOSE)
    form = CheckInForm(form_data(request), initial={"escort_details": session.patient.usual_escort})
    if request.method == "POST" and form.is_valid():
        try:
            if session.status == session.Status.SCHEDULED:
                services.session_check_in(
                    session=session, acting_user=request.user, **form.cleaned_data
                )
            else:
                services.session_confirm_escort(
                    session=session,
                    acting_user=request.user,
                    escort_details=form.cleaned_data["escort_details"],
                )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Checked in. Record the pre-dose vitals next.")
            return _to_session(session.pk)
    return _form_page(
        request,
        "monitoring/form.html",
        form,
        session,
        "Check in",
        "Check in",
        gate=gates.start_gate(session),
    )


@require_http_methods(["GET", "POST"])
def predose_decision(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_session_for_user(
        user=request.user, session_id=session_id, permission="monitoring.decide_predose"
    )
    form = PredoseDecisionForm(form_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.predose_decide(session=session, acting_user=request.user, **form.cleaned_data)
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Decision recorded.")
            return _to_session(session.pk)
    return _form_page(
        request,
        "monitoring/form.html",
        form,
        session,
        "Raised pre-dose blood pressure: proceed or defer?",
        "Record decision",
    )


@require_http_methods(["GET", "POST"])
def dose_new(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_session_for_user(user=request.user, session_id=session_id, permission=DOSE)
    form = DoseForm(form_data(request), session=session)
    if request.method == "POST" and form.is_valid():
        try:
            services.dose_record(session=session, acting_user=request.user, **form.cleaned_data)
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Dose recorded. The check schedule has started.")
            return _to_session(session.pk)
    return _form_page(
        request,
        "monitoring/form.html",
        form,
        session,
        "Record the dose",
        "Record dose",
        gate=gates.start_gate(session),
    )


@require_POST
def dose_complete(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_session_for_user(user=request.user, session_id=session_id, permission=DOSE)
    form = DoseCompleteForm(request.POST)
    if form.is_valid():
        try:
            services.dose_complete(session=session, acting_user=request.user, **form.cleaned_data)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, "Dose complete. Monitoring continues.")
    else:
        messages.error(request, "Enter the time the dose ended.")
    return _to_session(session.pk)


def _reason_view(
    request, *, obj, session, service, title, button, form_class=ReasonForm, field="reason"
):
    form = form_class(form_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            service(form.cleaned_data[field])
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Saved.")
            return _to_session(session.pk)
    return _form_page(request, "monitoring/form.html", form, session, title, button, obj=obj)


@require_http_methods(["GET", "POST"])
def vitals_error(request: HttpRequest, reading_id: int) -> HttpResponse:
    reading = get_reading_for_user(user=request.user, reading_id=reading_id, permission=DOSE)
    return _reason_view(
        request,
        obj=reading,
        session=reading.session,
        service=lambda reason: services.vitals_mark_error(
            reading=reading, acting_user=request.user, reason=reason
        ),
        title=f"Mark the reading of {timezone.localtime(reading.measured_at):%H:%M} as "
        "entered in error",
        button="Mark in error",
    )


@require_http_methods(["GET", "POST"])
def alert_acknowledge(request: HttpRequest, alert_id: int) -> HttpResponse:
    alert = get_alert_for_user(
        user=request.user, alert_id=alert_id, permission="monitoring.acknowledge_alert"
    )
    return _reason_view(
        request,
        obj=alert,
        session=alert.session,
        form_class=AcknowledgeForm,
        field="action_taken",
        service=lambda action: services.alert_acknowledge(
            alert=alert, acting_user=request.user, action_taken=action
        ),
        title=f"Acknowledge: {alert.message}",
        button="Acknowledge",
    )


@require_http_methods(["GET", "POST"])
def check_excuse(request: HttpRequest, check_id: int) -> HttpResponse:
    check = get_check_for_user(user=request.user, check_id=check_id, permission=DOSE)
    return _reason_view(
        request,
        obj=check,
        session=check.session,
        service=lambda reason: services.check_excuse(
            check=check, acting_user=request.user, reason=reason
        ),
        title=f"Record a deviation: {check.label} missed",
        button="Record deviation",
    )


@require_http_methods(["GET", "POST"])
def session_abort(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_session_for_user(user=request.user, session_id=session_id, permission=DOSE)
    return _reason_view(
        request,
        obj=None,
        session=session,
        service=lambda reason: services.session_abort(
            session=session, acting_user=request.user, reason=reason
        ),
        title="Abort this session",
        button="Abort session",
    )


@require_http_methods(["GET", "POST"])
def observation_new(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_session_for_user(user=request.user, session_id=session_id, permission=DOSE)
    form = ObservationForm(form_data(request), initial={"kind": request.GET.get("kind", "cadss")})
    if request.method == "POST" and form.is_valid():
        try:
            services.observation_record(
                session=session, acting_user=request.user, **form.cleaned_data
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Recorded.")
            return _to_session(session.pk)
    return _form_page(
        request,
        "monitoring/form.html",
        form,
        session,
        "Mental state, CADSS or adverse event",
        "Record",
    )


@require_http_methods(["GET", "POST"])
def discharge(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_session_for_user(user=request.user, session_id=session_id)
    if not may_sign_discharge(request.user, session):
        raise PermissionDenied("You may not sign this discharge.")
    form = DischargeForm(form_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.session_discharge(
                session=session,
                signer=request.user,
                password=form.cleaned_data["password"],
                **form.discharge_values(),
            )
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Discharged and signed. The session is locked.")
            return _to_session(session.pk)
    return _form_page(
        request,
        "monitoring/form.html",
        form,
        session,
        "Discharge",
        "Sign discharge",
        gate=gates.close_gate(session),
    )


@require_GET
def session_report(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_session_for_user(user=request.user, session_id=session_id)
    access_log(request=request, what="Session report", record=session)
    page = session_page(session=session)
    context = {"page": page, "rems": rems_monitoring_form(page=page)}
    return render(request, "monitoring/report.html", context)


@require_GET
@permission_required("monitoring.view_treatmentsession", raise_exception=True)
def floor_board(request: HttpRequest) -> HttpResponse:
    if request.site is None:
        raise Http404("You belong to no site.")
    sessions = floor_board_for_site(user=request.user, site_id=request.site.pk)
    context = {"sessions": sessions, "now": timezone.now()}
    template = (
        "monitoring/partials/floor_rows.html" if _is_htmx(request) else "monitoring/floor.html"
    )
    return render(request, template, context)


# --- Controlled-substance register --------------------------------------------------------------


@require_GET
@permission_required("monitoring.view_druglot", raise_exception=True)
def register(request: HttpRequest) -> HttpResponse:
    site_id = request.site.pk if request.site else None
    entries = register_for_user(user=request.user, site_id=site_id).order_by("-at", "-id")[:200]
    lots = lots_for_site(site_id=site_id) if site_id else []
    return render(request, "monitoring/register.html", {"entries": entries, "lots": lots})


@require_GET
@permission_required("monitoring.view_controlledsubstanceentry", raise_exception=True)
def register_csv(request: HttpRequest):
    export_log(request=request, what="Controlled-substance register export")
    entries = register_for_user(user=request.user).iterator(chunk_size=2000)
    rows = (
        (
            e.at.isoformat(),
            e.lot.site.name,
            e.lot.get_drug_display(),
            e.lot.lot_number,
            e.lot.concentration_mg_per_ml,
            e.get_kind_display(),
            e.amount_mg,
            e.volume_ml or "",
            e.balance_mg,
            e.by.printed_name,
            e.witness.printed_name if e.witness else "",
            e.prescriber.printed_name if e.prescriber else "",
            e.patient.mrn if e.patient else "",
            e.reason,
        )
        for e in entries
    )
    header = (
        "at (UTC)",
        "site",
        "drug",
        "lot",
        "mg/mL",
        "kind",
        "mg",
        "mL",
        "balance mg",
        "by",
        "witness",
        "prescriber",
        "patient record number",
        "reason",
    )
    return csv_response(filename="controlled-substance-register.csv", header=header, rows=rows)


@require_http_methods(["GET", "POST"])
@permission_required("monitoring.add_druglot", raise_exception=True)
def lot_new(request: HttpRequest) -> HttpResponse:
    if request.site is None:
        raise Http404("You belong to no site.")
    form = LotForm(form_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.lot_receive(site=request.site, acting_user=request.user, **form.cleaned_data)
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Lot received into the register.")
            return redirect("monitoring:register")
    return render(
        request,
        "monitoring/form.html",
        {
            "form": form,
            "session": None,
            "title": f"Receive a lot at {request.site}",
            "button": "Receive",
        },
    )


@require_http_methods(["GET", "POST"])
def waste_new(request: HttpRequest, lot_id: int) -> HttpResponse:
    lot = get_lot_for_user(
        user=request.user, lot_id=lot_id, permission="monitoring.add_controlledsubstanceentry"
    )
    form = WasteForm(form_data(request), site=lot.site)
    if request.method == "POST" and form.is_valid():
        try:
            services.waste_record(lot=lot, acting_user=request.user, **form.cleaned_data)
        except ValidationError as error:
            apply_errors(form, error)
        else:
            messages.success(request, "Waste recorded with its witness.")
            return redirect("monitoring:register")
    return render(
        request,
        "monitoring/form.html",
        {
            "form": form,
            "session": None,
            "title": f"Record waste from {lot}",
            "button": "Record waste",
        },
    )
