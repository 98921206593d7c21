"""Beat and a real Celery worker, on a real Redis, send a due reminder once (SPEC §F4).

The worker and beat run as subprocesses, as in production (the approach of
tests/clinic/test_celery_worker.py), on the test database: the test is transactional so that they
see its rows, and it sees theirs. Beat's tasks go to a queue of this test only, on a Redis database
number of this module, so that neither another test run nor a developer's worker takes them. No
Redis is a failure, not a skip: the broker path is what is under test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import redis
from celery.beat import PersistentScheduler
from django.conf import settings
from django.db import connection
from django.utils import timezone

from clinic.celery import app as celery_app
from clinic.models import Notification, Role
from followups import services
from followups.models import FollowUp, Reminder
from followups.tasks import sweep_reminders
from tests.followups.helpers import rules_where

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("empty_database_for_module"),
]

REPO_ROOT = Path(settings.BASE_DIR)
CELERY = str(Path(sys.executable).with_name("celery"))
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_DB = 10  # this module's Redis database number (tests/clinic uses 15)
DELIVERY_TIMEOUT = 60  # seconds
SWEEP_ENTRY = "sweep-reminders"
TASK_FAILED = re.compile(r"Task followups\.tasks\.sweep_reminders\[[^\]]*\] raised .*")


@pytest.fixture
def redis_url() -> str:
    base = urlsplit(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    url = urlunsplit(base._replace(path=f"/{REDIS_DB}"))
    # Fails the test, with the reason, when nothing answers.
    redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    return url


@pytest.fixture
def queue(redis_url: str) -> Iterator[str]:
    name = f"vigil-followups-test-{uuid.uuid4().hex}"
    yield name
    redis.Redis.from_url(redis_url).delete(
        name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}"
    )


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


class Processes:
    """Celery subprocesses; all stopped at the end, their output printed (shown on failure)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.running: list[tuple[str, subprocess.Popen, Path]] = []

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
        self.running.append((name, process, log))

    def check(self) -> None:
        """Fail at once, with the line, when a process died or the sweep task raised."""
        for name, process, log in self.running:
            assert process.poll() is None, f"celery {name} exited with {process.returncode}"
            failed = TASK_FAILED.search(log.read_text(errors="replace"))
            if failed:
                pytest.fail(f"the sweep raised in the worker: {failed.group(0)}")

    def stop(self) -> None:
        for _name, process, _log in self.running:
            if process.poll() is None:
                process.terminate()
        for _name, process, _log in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for name, process, log in self.running:
            output = log.read_text(errors="replace")
            print(f"--- celery {name} (exit {process.returncode})\n{output}")


@pytest.fixture
def celery(transactional_db, redis_url: str, tmp_path: Path) -> Iterator[Processes]:
    env = {
        **os.environ,
        # After transactional_db: the connection's NAME is the test database's.
        "DATABASE_URL": _database_url(connection.settings_dict),
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "clinic.settings",
        "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "PYTHONUNBUFFERED": "1",
    }
    processes = Processes(env, tmp_path)
    try:
        yield processes
    finally:
        processes.stop()


def _schedule_overdue_sweep(schedule: Path) -> None:
    """Beat's schedule file as a beat stopped two minutes ago left it: the sweep is sent as soon
    as beat starts, not a minute later."""
    scheduler = PersistentScheduler(app=celery_app, schedule_filename=str(schedule))
    try:
        entry = scheduler.schedule[SWEEP_ENTRY]
        scheduler.schedule[SWEEP_ENTRY] = entry._next_instance(
            last_run_at=timezone.now() - timedelta(minutes=2)
        )
    finally:
        scheduler.close()


def test_beat_sends_the_reminder_sweep_every_minute():
    entry = settings.CELERY_BEAT_SCHEDULE[SWEEP_ENTRY]
    assert entry == {"task": sweep_reminders.name, "schedule": 60.0}


def test_beat_and_a_real_worker_send_a_due_reminder_once(
    approved_course, nurse, celery, queue, tmp_path
):
    (rule,) = rules_where(approved_course.protocol_version.parsed, role=Role.NURSE)
    # Discharged a day and a minute ago: the nurses' next-day call is due.
    start = timezone.now() - timedelta(hours=rule.offset_hours, minutes=1)
    services.plan_from(course=approved_course, start=start, acting_user=nurse)
    call = FollowUp.objects.get(course=approved_course, code=rule.code)
    due = Reminder.objects.filter(followup=call, recipient=nurse)
    assert set(due.values_list("channel", "state")) == {
        (Reminder.Channel.IN_APP, Reminder.State.PENDING),
        (Reminder.Channel.EMAIL, Reminder.State.PENDING),
    }
    assert not Reminder.objects.exclude(pk__in=due).filter(due_at__lte=timezone.now()).exists()
    schedule = tmp_path / "celerybeat-schedule"
    _schedule_overdue_sweep(schedule)

    celery.start(
        "worker",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "--loglevel=INFO",
        f"--queues={queue}",
        f"--hostname={queue}@%h",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
    )
    # Beat's tasks go to this test's queue.
    beat_options = [f"--schedule={schedule}", "--", f"task_default_queue={queue}"]
    celery.start("beat", "beat", "--loglevel=INFO", *beat_options)

    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while set(due.values_list("state", flat=True)) != {Reminder.State.SENT}:
        if time.monotonic() > deadline:
            pytest.fail(f"the reminders were not sent within {DELIVERY_TIMEOUT} s")
        celery.check()
        time.sleep(0.5)

    notifications = Notification.objects.filter(
        recipient=nurse, kind=Notification.Kind.FOLLOWUP_REMINDER
    )
    assert list(notifications.values_list("title", flat=True)) == [
        due.get(channel=Reminder.Channel.IN_APP).title
    ]
    assert set(due.values_list("attempts", flat=True)) == {1}
    # Swept again here, nothing goes out twice.
    assert services.sweep_due_reminders()["sent"] == 0
    assert notifications.count() == 1
