"""The production shape (SPEC §N1, §N2): compose file, image, environment, production refusals."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings

REPO_ROOT = Path(settings.BASE_DIR)
SERVICES = {"db", "redis", "web", "worker", "beat"}
APP_SERVICES = {"web", "worker", "beat"}

# Every way clinic/settings.py reads a variable: os.environ.get("X"), os.environ["X"],
# os.getenv("X"), env_bool("X"), env_list("X"), dj_database_url.config(env="X").
ENV_READ = re.compile(
    r"""(?:os\.environ\.get|os\.getenv|env_bool|env_list)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|os\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""
    r"""|\benv\s*=\s*["']([A-Z][A-Z0-9_]*)["']"""
)
# A tag that loads something (script, stylesheet, image, font, frame) from another origin.
REMOTE_SOURCE = re.compile(
    r"""<(?:script|link|img|source|iframe|embed|object)\b[^>]*?"""
    r"""\b(?:src|href|srcset|data)\s*=\s*["']?\s*(?:https?:)?//""",
    re.IGNORECASE | re.DOTALL,
)
REMOTE_CSS = re.compile(r"""(?:url\(\s*["']?|@import\s+["'])\s*(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def _manage(*args: str, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _production_env(**overrides: str) -> dict[str, str]:
    """This environment without any DJANGO_*/VIGIL_* setting of the caller's, plus DJANGO_DEBUG=0.

    DATABASE_URL and REDIS_URL pass through, so the subprocess uses the same services.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "VIGIL_")) or key == "DJANGO_SETTINGS_MODULE"
    }
    env["DJANGO_DEBUG"] = "0"
    env.update(overrides)
    return env


def _database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for the database Django is connected to (the test database in a test)."""
    from urllib.parse import quote

    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{settings_dict['NAME']}"
    credentials = quote(settings_dict["USER"] or "", safe="")
    if settings_dict.get("PASSWORD"):
        credentials += ":" + quote(settings_dict["PASSWORD"], safe="")
    host = settings_dict["HOST"] or "localhost"
    port = settings_dict["PORT"] or "5432"
    return f"postgres://{credentials}@{host}:{port}/{settings_dict['NAME']}"


def _output(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


# --- docker-compose.yml and the image ---------------------------------------------------------


def test_compose_runs_the_five_services_of_the_production_shape(compose):
    assert set(compose["services"]) == SERVICES
    assert compose["services"]["db"]["image"].startswith("postgres:15")
    assert compose["services"]["redis"]["image"].startswith("redis:7")


def test_every_service_has_a_healthcheck_and_restarts_unless_stopped(compose):
    for name, service in compose["services"].items():
        assert service["restart"] == "unless-stopped", name
        test = service["healthcheck"]["test"]
        assert test and test[0] in {"CMD", "CMD-SHELL"}, name


def test_the_app_services_take_secrets_from_the_env_file_and_use_the_compose_services(compose):
    for name in APP_SERVICES:
        service = compose["services"][name]
        env_files = service["env_file"]
        assert ".env" in ([env_files] if isinstance(env_files, str) else env_files), name
        environment = service["environment"]
        assert "@db:5432/" in environment["DATABASE_URL"], name
        assert environment["REDIS_URL"].startswith("redis://redis:6379/"), name
    # The database gets its own password from .env; nothing secret is written in the file.
    assert "POSTGRES_PASSWORD" in compose["services"]["db"]["environment"]
    for name, service in compose["services"].items():
        assert "DJANGO_SECRET_KEY" not in service.get("environment", {}), name


def test_services_start_only_after_what_they_need_is_healthy(compose):
    services = compose["services"]
    for name in APP_SERVICES:
        depends_on = services[name]["depends_on"]
        assert {"db", "redis"} <= set(depends_on), name
        assert all(dep["condition"] == "service_healthy" for dep in depends_on.values()), name
    # Migrations run in web; the worker and beat wait for it.
    for name in ("worker", "beat"):
        assert services[name]["depends_on"]["web"]["condition"] == "service_healthy"


def _command(service: dict) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def test_web_migrates_then_serves_with_gunicorn_and_is_probed_on_healthz(compose):
    web = compose["services"]["web"]
    command = _command(web)
    assert "manage.py migrate --noinput" in command
    assert "gunicorn clinic.wsgi" in command
    assert command.index("migrate") < command.index("gunicorn")
    assert "http://127.0.0.1:8000/healthz" in " ".join(web["healthcheck"]["test"])


def test_the_worker_and_beat_run_celery_with_beat_schedule_in_a_volume(compose):
    services = compose["services"]
    assert "celery -A clinic worker" in _command(services["worker"])
    beat = _command(services["beat"])
    assert "celery -A clinic beat" in beat
    schedule_dir = re.search(r"--schedule[= ](\S+)/[^/\s]+", beat).group(1)
    mounts = [volume.split(":")[1] for volume in services["beat"]["volumes"]]
    assert schedule_dir in mounts
    assert "--enable-remote-control" in beat  # so the healthcheck's `inspect ping` reaches beat


def test_the_image_runs_as_a_non_root_user():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users, "the image must switch to an unprivileged user"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_the_image_builds_front_end_files_from_npm_not_a_cdn():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "npm ci" in dockerfile
    assert "collectstatic" in dockerfile
    # Nothing downloaded by URL: base images and npm/pip registries only.
    assert not re.search(r"https?://", dockerfile)
    assert not re.search(r"^\s*ADD\s", dockerfile, re.MULTILINE)
    assert not re.search(r"\b(?:curl|wget)\b", dockerfile)
    # The image copies every vendor file the Makefile does.
    recipe = (REPO_ROOT / "Makefile").read_text().split("$(VENDOR)/.copied:")[1].split("\n\n")[0]
    sources = set(re.findall(r"node_modules/[\w./-]+", recipe)) - {"node_modules/.installed"}
    assert sources
    for source in sources:
        assert source in dockerfile, source


def test_collectstatic_succeeds_in_production_mode(tmp_path):
    """The image runs collectstatic with DJANGO_DEBUG=0, where the manifest storage rewrites every
    reference inside the front-end files (source maps included) and fails on a missing file."""
    code = (
        "import sys, django; from django.conf import settings; "
        "settings.STATIC_ROOT = sys.argv[1]; django.setup(); "
        "from django.core.management import call_command; "
        "call_command('collectstatic', interactive=False, verbosity=0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=REPO_ROOT,
        env=_production_env(DJANGO_SECRET_KEY=secrets.token_urlsafe(48)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, _output(result)
    assert (tmp_path / "staticfiles.json").is_file()
    assert (tmp_path / "vendor" / "bootstrap" / "bootstrap.min.css").is_file()


# --- Environment ------------------------------------------------------------------------------


def test_env_example_documents_every_variable_the_settings_read():
    source = (REPO_ROOT / "clinic" / "settings.py").read_text()
    read = {name for match in ENV_READ.findall(source) for name in match if name}
    # The pattern itself still finds the ways settings.py reads variables.
    assert {"DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DATABASE_URL", "DJANGO_ALLOWED_HOSTS"} <= read
    example = (REPO_ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    assert read - documented == set(), "add these to .env.example with a comment"


# --- Production refusals (subprocesses: settings are read once per process) ------------------


def test_it_refuses_to_start_on_the_default_secret_key():
    result = _manage("check", env=_production_env())
    assert result.returncode != 0, _output(result)
    assert "DJANGO_SECRET_KEY" in result.stderr, _output(result)


def test_it_passes_the_deployment_checks_with_a_secret_key_and_allowed_hosts():
    env = _production_env(
        DJANGO_SECRET_KEY=secrets.token_urlsafe(48),  # 64 characters
        DJANGO_ALLOWED_HOSTS="vigil.example",
    )
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, _output(result)


def test_seed_demo_refuses_to_run_in_production_and_saves_nothing(transactional_db):
    from django.db import connection

    from clinic.models import Site, User
    from patients.models import Patient

    def counts() -> tuple[int, int, int]:
        return User.objects.count(), Site.objects.count(), Patient.objects.count()

    before = counts()
    env = _production_env(
        DJANGO_SECRET_KEY=secrets.token_urlsafe(48),
        DATABASE_URL=_database_url(connection.settings_dict),
    )
    result = _manage("seed_demo", env=env)
    assert result.returncode != 0, _output(result)
    assert "DJANGO_DEBUG=0" in result.stderr, _output(result)
    assert counts() == before


# --- No CDN (SPEC §N2) ------------------------------------------------------------------------


def test_no_template_loads_a_script_style_image_or_font_from_another_origin():
    templates = sorted((REPO_ROOT / "templates").rglob("*.html"))
    assert templates
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {match.group(0)}"
        for path in templates
        for match in REMOTE_SOURCE.finditer(path.read_text())
    ]
    offenders += [
        f"{path.relative_to(REPO_ROOT)}: {match.group(0)}"
        for path in templates
        for match in REMOTE_CSS.finditer(path.read_text())
    ]
    assert offenders == []


def test_our_stylesheets_import_nothing_from_another_origin():
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in sorted((REPO_ROOT / "static").rglob("*.css"))
        if "vendor" not in path.relative_to(REPO_ROOT / "static").parts
        and REMOTE_CSS.search(path.read_text())
    ]
    assert offenders == []


def test_the_application_connects_as_a_role_that_owns_nothing_and_migrates_as_the_owner(compose):
    """SPEC §C2: the role the application uses cannot disable the audit triggers or TRUNCATE."""
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://${POSTGRES_APP_USER"), name
        assert environment["MIGRATE_DATABASE_URL"].startswith("postgres://${POSTGRES_USER"), name
    web = " ".join(compose["services"]["web"]["command"])
    assert 'DATABASE_URL="$$MIGRATE_DATABASE_URL" python manage.py migrate' in web
    for name in ("worker", "beat"):
        assert "MIGRATE" not in " ".join(compose["services"][name]["command"]), name
    db = compose["services"]["db"]
    assert "./docker/postgres:/docker-entrypoint-initdb.d:ro" in db["volumes"]
    script = (REPO_ROOT / "docker" / "postgres" / "10-app-role.sh").read_text()
    assert "NOSUPERUSER" in script
    assert "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES" in script
    assert "TRUNCATE" not in script.split("SQL\n", 1)[1]
