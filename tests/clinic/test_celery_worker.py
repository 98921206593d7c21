"""A real Celery worker and beat against a real Redis deliver the heartbeat end to end.

The worker and beat run as subprocesses, as in production, on the test database. Each test uses
its own queue, so that neither another test run nor a developer's worker on the same Redis
takes its messages. No Redis is a failure, not a skip: the broker path is what is under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from celery.beat import PersistentScheduler
from django.conf import settings
from django.db import connection
from django.utils import timezone

from clinic.celery import app as celery_app
from clinic.models import Heartbeat
from clinic.tasks import heartbeat

REPO_ROOT = Path(settings.BASE_DIR)
CELERY = str(Path(sys.executable).with_name("celery"))
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"
DELIVERY_TIMEOUT = 60  # seconds


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL
    # Fails the test, with the reason, when nothing answers.
    redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    return url


@pytest.fixture
def queue(redis_url: str) -> Iterator[str]:
    name = f"vigil-test-{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(redis_url)
    client.delete(name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")


def _database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for the database Django is connected to: in a test, the test database."""
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{settings_dict['NAME']}"
    credentials = quote(settings_dict["USER"] or "", safe="")
    if settings_dict.get("PASSWORD"):
        credentials += ":" + quote(settings_dict["PASSWORD"], safe="")
    host = settings_dict["HOST"] or "localhost"
    port = settings_dict["PORT"] or "5432"
    return f"postgres://{credentials}@{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture
def celery_env(transactional_db, redis_url: str) -> dict[str, str]:
    # After transactional_db, so that the connection's NAME is the test database's; and the
    # worker's writes are committed, so this test's connection sees them.
    return {
        **os.environ,
        "DATABASE_URL": _database_url(connection.settings_dict),
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "clinic.settings",
        "PYTHONUNBUFFERED": "1",
    }


class CeleryProcesses:
    """Subprocesses started with `start`; all stopped on exit, their output printed (pytest shows
    it when the test fails)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, *args: str) -> None:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [CELERY, "-A", "clinic", *args],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes.append((name, process, log))

    def assert_running(self) -> None:
        for name, process, _log in self.processes:
            assert process.poll() is None, f"celery {name} exited with {process.returncode}"

    def stop(self) -> None:
        for _name, process, _log in self.processes:
            if process.poll() is None:
                process.terminate()
        for _name, process, _log in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for name, process, log in self.processes:
            print(
                f"--- celery {name} (exit {process.returncode})\n{log.read_text(errors='replace')}"
            )


@pytest.fixture
def celery(celery_env: dict[str, str], tmp_path: Path) -> Iterator[CeleryProcesses]:
    processes = CeleryProcesses(celery_env, tmp_path)
    try:
        yield processes
    finally:
        processes.stop()


def _start_worker(celery: CeleryProcesses, queue: str) -> None:
    celery.start(
        "worker",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "--loglevel=INFO",
        f"--queues={queue}",
        f"--hostname={queue}@%h",
        # No other nodes to talk to: skip the start-up synchronisation and events.
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
    )


def _wait_for_heartbeat(celery: CeleryProcesses, *, after) -> Heartbeat:
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while time.monotonic() < deadline:
        beat = Heartbeat.objects.filter(name="worker", beat_at__gte=after).first()
        if beat is not None:
            return beat
        celery.assert_running()
        time.sleep(0.5)
    pytest.fail(f"no heartbeat from the worker within {DELIVERY_TIMEOUT} s")


def _schedule_overdue_heartbeat(schedule: Path) -> None:
    """Write beat's schedule file as a beat stopped two minutes ago would have left it.

    A fresh schedule counts the 60 s interval from beat's start, so the first heartbeat would
    come a minute later; an overdue entry is sent as soon as beat starts, as after a restart.
    """
    scheduler = PersistentScheduler(app=celery_app, schedule_filename=str(schedule))
    try:
        entry = scheduler.schedule["heartbeat"]
        scheduler.schedule["heartbeat"] = entry._next_instance(
            last_run_at=timezone.now() - timedelta(minutes=2)
        )
    finally:
        scheduler.close()


def test_beat_schedules_the_heartbeat_every_minute():
    entry = settings.CELERY_BEAT_SCHEDULE["heartbeat"]
    assert entry == {"task": heartbeat.name, "schedule": 60.0}


def test_beat_and_the_worker_deliver_the_periodic_heartbeat(
    transactional_db, celery, queue, tmp_path
):
    schedule = tmp_path / "celerybeat-schedule"
    _schedule_overdue_heartbeat(schedule)
    started = timezone.now()

    _start_worker(celery, queue)
    celery.start(
        "beat",
        "beat",
        "--loglevel=INFO",
        f"--schedule={schedule}",
        # Beat's tasks go to this test's queue.
        "--",
        f"task_default_queue={queue}",
    )

    beat = _wait_for_heartbeat(celery, after=started)
    assert started <= beat.beat_at <= timezone.now()


def test_a_task_sent_from_the_app_is_run_by_the_worker(transactional_db, celery, queue, redis_url):
    _start_worker(celery, queue)
    started = timezone.now()

    # What heartbeat.delay() does, on this test's queue of the Redis the worker listens to (the
    # test process's own broker is the filesystem one unless REDIS_URL is set).
    with celery_app.connection_for_write(redis_url) as conn, conn.Producer() as producer:
        heartbeat.apply_async(queue=queue, producer=producer)

    _wait_for_heartbeat(celery, after=started)
