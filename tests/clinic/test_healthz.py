from __future__ import annotations

import pytest
from django.db import DatabaseError
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_it_answers_without_login_and_reports_each_part(client):
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == "ok"
    assert body["broker"] in {"ok", "down"}
    assert set(body) == {"database", "broker", "worker", "broker_transport"}


def test_it_answers_503_when_the_database_is_down(client, monkeypatch):
    from clinic import views

    def broken_cursor(*args, **kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(views.connection, "cursor", broken_cursor)
    response = client.get(reverse("healthz"))
    assert response.status_code == 503
    assert response.json()["database"] == "down"


def test_it_reports_the_broker_down_without_failing(client, settings):
    from clinic.celery import app

    app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    try:
        response = client.get(reverse("healthz"))
    finally:
        app.conf.broker_url = settings.CELERY_BROKER_URL
    assert response.status_code == 200
    assert response.json()["broker"] == "down"
