"""The admin in a real browser: the system's Chromium driven by Playwright
against pytest-django's live server.

Only a Chromium the machine already has is used (``BERTH_CHROMIUM``, by
default Debian's ``/usr/bin/chromium``); nothing is downloaded. Without it,
or without the playwright package, every test here is skipped with the
reason. Screenshots for docs/img/ are written only with BERTH_SCREENSHOTS=1,
so an ordinary run leaves the docs alone.
"""

import os
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError as error:  # every test here is skipped, with this reason
    expect = sync_playwright = None
    NO_PLAYWRIGHT = f"browser tests need the playwright package: pip install -e '.[dev]' ({error})"

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "img"
CHROMIUM = Path(os.environ.get("BERTH_CHROMIUM", "/usr/bin/chromium"))
# Large enough for the calendar's full width, small enough to read in docs.
VIEWPORT = {"width": 1280, "height": 800}
# The machine may have no internet: without these Chromium keeps opening
# connections (updates, sync, QUIC probes) that are refused and slow it down.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "browser-pass-1"


def _missing() -> str | None:
    if sync_playwright is None:
        return NO_PLAYWRIGHT
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (
            f"browser tests need Chromium at {CHROMIUM} "
            "(install Debian's chromium or point BERTH_CHROMIUM at one)"
        )
    return None


MISSING = _missing()


def pytest_collection_modifyitems(config, items):
    if MISSING is None:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason=MISSING)
    for item in items:
        if here in item.path.parents:
            item.add_marker(skip)


@pytest.fixture(scope="package")
def browser():
    """One Chromium for the whole folder.

    Playwright's sync API keeps an asyncio loop running in this thread for
    as long as it is started, and Django refuses ORM calls under a running
    loop. The seeding and database checks here are plain synchronous code
    that only looks async to Django, so the refusal is switched off, for
    as long as the loop runs and no longer: package scope stops both after
    the last test of this folder, before any other folder's tests run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            yield chromium
            chromium.close()


@pytest.fixture
def superuser(transactional_db, django_user_model, settings):
    # The login form is what is tested, not the hash's cost: the default
    # hasher would spend half a second of every test on two hashes.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return django_user_model.objects.create_superuser(
        username="operator", email="operator@example.com", password=PASSWORD
    )


@pytest.fixture
def page(browser, live_server, superuser):
    """A tab logged in to the admin through its own login form."""
    context = browser.new_context(viewport=VIEWPORT, base_url=live_server.url)
    # A missing element fails in seconds, not after Playwright's 30 s default.
    context.set_default_timeout(10_000)
    # The admin's navigation sidebar collapsed, as the admin's own toggle
    # leaves it: the pages (the calendar's chart is 1120 px wide) get the
    # whole 1280 px.
    context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    # The admin has no favicon; Chromium's request for one would log a 404
    # warning in every test.
    context.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    tab = context.new_page()
    tab.goto("/admin/login/?next=/admin/")
    tab.fill("#id_username", superuser.username)
    tab.fill("#id_password", PASSWORD)
    with tab.expect_navigation():
        tab.click("input[type=submit]")
    assert tab.url == f"{live_server.url}/admin/", tab.locator(".errornote").all_inner_texts()
    yield tab
    context.close()


@pytest.fixture
def no_worker(monkeypatch):
    """Builds and webhook deliveries stay where the test leaves them. These
    tests really commit, so on_commit would hand them to a broker with no
    worker behind it; the tests run the build steps themselves instead."""
    monkeypatch.setattr("compute.tasks.send_step", lambda instance, nics=None: None)
    monkeypatch.setattr("compute.tasks.send_builds", lambda instances: None)
    monkeypatch.setattr("reservations.tasks.deliver.delay", lambda delivery_id: None)


def screenshot(page, name: str) -> None:
    """docs/img/<name>.png, only when asked for (BERTH_SCREENSHOTS=1)."""
    if os.environ.get("BERTH_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png")
