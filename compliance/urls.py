from django.urls import path

from compliance import views

app_name = "compliance"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("<slug:figure>/", views.figure_list, name="list"),
    path("<slug:figure>/export.csv", views.figure_export, name="export"),
]
