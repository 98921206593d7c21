from django.urls import path

from monitoring import views

app_name = "monitoring"

urlpatterns = [
    path("floor/", views.floor_board, name="floor"),
    path("courses/<int:course_id>/sessions/new/", views.session_new, name="session_new"),
    path("<int:session_id>/", views.session_detail, name="session"),
    path("<int:session_id>/live/", views.session_live, name="session_live"),
    path("<int:session_id>/check-in/", views.check_in, name="check_in"),
    path("<int:session_id>/predose-decision/", views.predose_decision, name="predose_decision"),
    path("<int:session_id>/dose/", views.dose_new, name="dose_new"),
    path("<int:session_id>/dose/complete/", views.dose_complete, name="dose_complete"),
    path("<int:session_id>/vitals/", views.vitals_new, name="vitals_new"),
    path("<int:session_id>/observations/new/", views.observation_new, name="observation_new"),
    path("<int:session_id>/discharge/", views.discharge, name="discharge"),
    path("<int:session_id>/abort/", views.session_abort, name="abort"),
    path("<int:session_id>/report/", views.session_report, name="report"),
    path("vitals/<int:reading_id>/error/", views.vitals_error, name="vitals_error"),
    path("alerts/<int:alert_id>/acknowledge/", views.alert_acknowledge, name="alert_acknowledge"),
    path("checks/<int:check_id>/excuse/", views.check_excuse, name="check_excuse"),
    path("register/", views.register, name="register"),
    path("register.csv", views.register_csv, name="register_csv"),
    path("register/lots/new/", views.lot_new, name="lot_new"),
    path("register/lots/<int:lot_id>/waste/", views.waste_new, name="waste_new"),
]
