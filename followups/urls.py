from django.urls import path

from followups import views

app_name = "followups"

urlpatterns = [
    path("", views.worklist, name="worklist"),
    path("<int:followup_id>/", views.complete, name="complete"),
    path("<int:followup_id>/missed/", views.missed, name="missed"),
    path("courses/<int:course_id>/status/", views.course_status, name="course_status"),
]
