from django.urls import path

from patients import views

app_name = "patients"

urlpatterns = [
    path("", views.patient_list, name="list"),
    path("new/", views.patient_register, name="register"),
    path("<int:patient_id>/", views.patient_chart, name="chart"),
    path("<int:patient_id>/edit/", views.patient_edit, name="edit"),
    path("<int:patient_id>/void/", views.patient_void, name="void"),
    path("<int:patient_id>/consents/new/", views.consent_new, name="consent_new"),
    path("consents/<int:consent_id>/withdraw/", views.consent_withdraw, name="consent_withdraw"),
    path("consents/<int:consent_id>/scan/", views.consent_scan, name="consent_scan"),
    path("consent-templates/", views.template_list, name="template_list"),
    path("consent-templates/new/", views.template_new, name="template_new"),
    path("consent-templates/<int:template_id>/", views.template_detail, name="template_detail"),
    path("consent-templates/<int:template_id>/edit/", views.template_edit, name="template_edit"),
    path(
        "consent-templates/<int:template_id>/publish/",
        views.template_publish,
        name="template_publish",
    ),
]
