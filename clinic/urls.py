from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from clinic import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("site/switch", views.switch_site, name="switch_site"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/password/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("notifications/", views.notification_list, name="notifications"),
    path("notifications/read/", views.notification_read, name="notification_read"),
    path("patients/", include("patients.urls")),
    path("protocols/", include("protocols.urls")),
    path("sessions/", include("monitoring.urls")),
    path("follow-ups/", include("followups.urls")),
    path("audit/", include("audit.urls")),
    path("compliance/", include("compliance.urls")),
    path("admin/", admin.site.urls),
]
