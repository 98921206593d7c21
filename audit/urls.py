from django.urls import path

from audit import views

app_name = "audit"

urlpatterns = [
    path("", views.event_list, name="events"),
    path("export.csv", views.event_export, name="events_export"),
    path("record/<str:object_type>/<str:object_id>/", views.record_trail, name="record"),
    path(
        "record/<str:object_type>/<str:object_id>/export.csv",
        views.record_export,
        name="record_export",
    ),
    path("patient/<int:pk>/", views.patient_timeline, name="patient"),
    path("user/<int:pk>/", views.user_activity, name="user"),
    path("verification/", views.verification_list, name="verifications"),
    path("verification/<int:pk>/", views.verification_detail, name="verification"),
]
