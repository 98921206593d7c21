"""The compliance dashboard (SPEC §C5): figures per step, drill-down lists, CSV exports.

Read-only pages for holders of `audit.view_compliance` (administrators). A site outside the
user's sites answers 404, as every other record does (SPEC §U).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from audit.services import access_log, export_log
from clinic.exports import csv_response
from clinic.models import Site
from clinic.pagination import keyset_page
from compliance.forms import SHOW_VIOLATIONS, ComplianceFilterForm, ComplianceListForm
from compliance.selectors import (
    FIGURES,
    ROW_ORDER,
    STEPS,
    Figure,
    compliance_dashboard,
    figure_rows,
    figure_totals,
    format_duration,
    load_rule_book,
)

VIEW = "audit.view_compliance"
PAGE_SIZE = 50
EXPORT_HEADER = (
    "figure",
    "record",
    "record id",
    "date-time (site time)",
    "patient record number",
    "detail",
    "outcome",
    "reason",
    "audit record type",
    "audit record id",
)


def _figure(slug: str) -> Figure:
    figure = FIGURES.get(slug)
    if figure is None:
        raise Http404("No such figure.")
    return figure


def _bind(request: HttpRequest, form_class: type[ComplianceFilterForm]) -> ComplianceFilterForm:
    """The filter form, bound to the query string over the defaults (last 28 days, current
    site). A site id that is not one of the user's sites is a 404, not a form error."""
    sites = list(Site.objects.filter(pk__in=request.user.site_ids).order_by("name"))
    by_id = {site.pk: site for site in sites}
    site = request.site
    raw = request.GET.get("site", "").strip()
    if raw:
        try:
            wanted = int(raw)
        except ValueError:
            wanted = None  # not a number: the form says so
        if wanted is not None:
            if wanted not in by_id:
                raise Http404("Not one of your sites.")
            site = by_id[wanted]
    if site is None:
        raise Http404("You belong to no site.")
    data = form_class.defaults(site=site, today=timezone.localdate(timezone=site.tzinfo))
    data.update({name: request.GET[name] for name in form_class.base_fields if name in request.GET})
    if not data.get("site", "").strip():
        data["site"] = str(site.pk)
    return form_class(data, user=request.user, sites=sites)


def _query(form: ComplianceFilterForm, **extra: str) -> str:
    data = form.cleaned_data
    params = {"site": data["site"], "start": data["start"], "end": data["end"], **extra}
    return urlencode(params)


@require_GET
@permission_required(VIEW, raise_exception=True)
def dashboard(request: HttpRequest) -> HttpResponse:
    form = _bind(request, ComplianceFilterForm)
    context: dict = {"form": form, "steps": STEPS}
    if form.is_valid():
        scope = form.scope(now=timezone.now())
        board = compliance_dashboard(scope=scope)
        context.update(
            scope=scope,
            board=board,
            chart=board.chart(),
            median_ack=format_duration(board.median_ack),
            query=_query(form),
        )
    return render(request, "compliance/dashboard.html", context)


@require_GET
@permission_required(VIEW, raise_exception=True)
def figure_list(request: HttpRequest, figure: str) -> HttpResponse:
    figure = _figure(figure)
    form = _bind(request, ComplianceListForm)
    context: dict = {"form": form, "figure": figure, "step": STEPS[figure.step]}
    if form.is_valid():
        scope = form.scope(now=timezone.now())
        book = load_rule_book()
        show = form.cleaned_data.get("show") or "all"
        rows = figure_rows(figure, scope, book, violations_only=show == SHOW_VIOLATIONS)
        page = keyset_page(rows, fields=ROW_ORDER, cursor=request.GET.get("after"), size=PAGE_SIZE)
        # The list names patients by record number: a view of clinical records (SPEC §C3).
        access_log(request=request, what=f"Compliance list: {figure.title}", site_id=scope.site.pk)
        context.update(
            scope=scope,
            totals=figure_totals(figure, scope, book),
            definition=figure.definition(book),
            page=page,
            rows=[figure.describe(row) for row in page.items],
            show=show,
            query=_query(form),
            list_query=_query(form, show=show),
        )
    return render(request, "compliance/list.html", context)


@require_GET
@permission_required(VIEW, raise_exception=True)
def figure_export(request: HttpRequest, figure: str) -> HttpResponse | StreamingHttpResponse:
    figure = _figure(figure)
    form = _bind(request, ComplianceListForm)
    if not form.is_valid():
        context = {"form": form, "figure": figure, "step": STEPS[figure.step]}
        return render(request, "compliance/list.html", context, status=400)
    scope = form.scope(now=timezone.now())
    book = load_rule_book()
    show = form.cleaned_data.get("show") or "all"
    rows = figure_rows(figure, scope, book, violations_only=show == SHOW_VIOLATIONS)
    export_log(request=request, what=f"Compliance export: {figure.title}", site_id=scope.site.pk)

    def lines():
        for row in rows.iterator(chunk_size=1000):
            view = figure.describe(row)
            yield (
                figure.title,
                view.record,
                view.record_id,
                timezone.localtime(view.when, scope.tz).isoformat(timespec="seconds"),
                view.patient_mrn,
                view.detail,
                "compliant" if view.ok else "violation",
                view.reason,
                view.audit_type,
                view.audit_id if view.audit_id is not None else "",
            )

    return csv_response(
        filename=f"vigil-compliance-{figure.slug}-{scope.start:%Y%m%d}-{scope.end:%Y%m%d}.csv",
        header=EXPORT_HEADER,
        rows=lines(),
    )
