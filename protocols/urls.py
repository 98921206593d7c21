from django.urls import path

from protocols import views

app_name = "protocols"

urlpatterns = [
    path("", views.protocol_list, name="list"),
    path("versions/<int:version_id>/", views.version_detail, name="version_detail"),
    path("<int:protocol_id>/versions/new/", views.version_new, name="version_new"),
    path("versions/<int:version_id>/edit/", views.version_edit, name="version_edit"),
    path("versions/<int:version_id>/publish/", views.version_publish, name="version_publish"),
    path("rules-schema.json", views.rules_schema, name="rules_schema"),
    path("patients/<int:patient_id>/courses/new/", views.course_new, name="course_new"),
    path("courses/<int:course_id>/assessments/new/", views.assessment_new, name="assessment_new"),
    path("assessments/<int:assessment_id>/", views.assessment_detail, name="assessment_detail"),
    path("assessments/<int:assessment_id>/edit/", views.assessment_edit, name="assessment_edit"),
    path(
        "assessments/<int:assessment_id>/submit/",
        views.assessment_submit,
        name="assessment_submit",
    ),
    path("assessments/<int:assessment_id>/sign/", views.assessment_sign, name="assessment_sign"),
    path(
        "assessments/<int:assessment_id>/addenda/new/",
        views.addendum_new,
        name="addendum_new",
    ),
    path("sign-off/", views.signoff_queue, name="signoff_queue"),
]
