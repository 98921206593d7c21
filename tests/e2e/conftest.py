"""End-to-end tests: a real Chromium (Debian's, not Playwright's download) against a live server.

Every test here is marked `e2e`, so `pytest -m "not e2e"` leaves them out. They run last
(pytest-django orders live-server tests after the others) and flush the database after each test;
the rows created by data migrations are put back before each test by a serialized rollback.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in the test's thread; Django's ORM refuses to run in
# such a thread unless told it is safe (it is: the loop is Playwright's, not our code's).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parents[1]
SCREENSHOT_DIR = REPO_ROOT / "test-artifacts" / "screenshots"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """The system Chromium. Missing is a failure, not a skip: these tests must not pass silently."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "Chromium is not installed (looked for `chromium` on PATH). "
            "Install it (apt-get install chromium) to run the end-to-end tests.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict, chromium_executable: str) -> dict:
    return {
        **browser_type_launch_args,
        "executable_path": chromium_executable,
        "args": CHROMIUM_ARGS,
        "headless": browser_type_launch_args.get("headless", True),
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    # A landscape tablet-sized window, British English as the clinic's LANGUAGE_CODE.
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}, "locale": "en-GB"}


@pytest.fixture(scope="session")
def _serialized_db_contents(django_db_setup: None) -> dict[str, str]:
    """The migrated rows Django serialized when it created the test databases.

    Read before Playwright starts: see `_serialized_rollback_under_playwright`.
    """
    from django.db import connections

    return {
        alias: connections[alias]._test_serialized_contents
        for alias in connections
        if hasattr(connections[alias], "_test_serialized_contents")
    }


@pytest.fixture(scope="session", autouse=True)
def _serialized_rollback_under_playwright(
    _serialized_db_contents: dict[str, str], playwright
) -> Iterator[None]:
    """Keep Django's serialized rollback working once Playwright's sync API has started.

    Between its calls Playwright marks an asyncio loop as running in the test thread. Django keeps
    database connections in an asgiref Local that switches to context-local storage while a loop
    runs, so the tests get new connection objects, without the serialized contents Django put on
    the old ones: their flush would then remove the role groups for good. Put the contents back on
    the connections the tests use; close those connections at the end (Django's own teardown only
    sees the thread-local ones).
    """
    from django.db import connections

    for alias, contents in _serialized_db_contents.items():
        connection = connections[alias]
        if not hasattr(connection, "_test_serialized_contents"):
            connection._test_serialized_contents = contents
    yield
    connections.close_all()


@pytest.fixture(scope="module", autouse=True)
def _start_from_an_empty_database(django_db_setup, django_db_blocker, _serialized_db_contents):
    """Start each e2e module from an empty database, so that the serialized rollback only inserts:
    after a transactional test without serialized rollback (e.g. tests/clinic) the content types
    are re-created under new ids and a reload over them would collide. Put the migrated rows back
    at the end for the tests that follow."""
    from django.core.management import call_command
    from django.db import connection

    flush = {
        "interactive": False,
        "inhibit_post_migrate": True,
        "reset_sequences": False,
        "verbosity": 0,
    }
    with django_db_blocker.unblock():
        call_command("flush", **flush)
        yield
        call_command("flush", **flush)
        connection.creation.deserialize_db_from_string(_serialized_db_contents["default"])


@pytest.fixture(autouse=True)
def _restore_migrated_rows(django_db_serialized_rollback: None) -> None:
    """Each live-server test flushes the database when it ends; a serialized rollback reloads the
    rows the migrations created (role groups and their permissions, the service account) before
    the next one, so that factories can put users in their roles."""


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT_DIR


@pytest.fixture
def screenshot(page, screenshot_dir: Path):
    """`screenshot("name")` saves the whole page to test-artifacts/screenshots/name.png."""

    def take(name: str) -> Path:
        path = screenshot_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
