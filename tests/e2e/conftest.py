"""End-to-end tests: a real Chromium (Debian's, not Playwright's download) against a live server.

Every test here is marked `e2e`, so `pytest -m "not e2e"` leaves them out. They run last (pytest-django
orders live-server tests after the others) and flush the database after each test; the roles
created by the data migration are put back before each test by a serialized rollback.
"""

from __future__ import annotations

import os
import shutil
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


@pytest.fixture(autouse=True)
def _restore_roles(django_db_serialized_rollback: None) -> None:
    """Reload the migrated rows (role groups, permissions) that each live-server test's flush
    removes, so that factories can put users in their roles."""


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
