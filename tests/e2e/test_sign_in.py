"""Sign-in and roles in a real browser: an operator cannot reach review, deletion, training or promotion (the
pages are not there for them, by link or by address); a lead can, and the audit trail names the signed-in lead.
On a plant's shared PostgreSQL store, the deployment where sign-in is always required (the embedded store's sign-in
is the same code, tested page by page on both backends in tests/test_page_sign_in.py). Screenshots land in
``screenshot_dir``."""

from __future__ import annotations

import pgserver
import pytest
from records import seed_inspections

from visionqc.accounts import hash_password
from visionqc.filters import InspectionFilter
from visionqc.store import Store

pytestmark = pytest.mark.slow

PASSWORDS = {"olga": "operator secret 1", "lea": "lead secret 22"}


@pytest.fixture(scope="module")
def plant(tmp_path_factory, postgres_server):
    """The plant's data folder (the images) and its store on the PostgreSQL server (seeded on DuckDB, copied; the
    DuckDB file is then removed, so nothing can read it by mistake)."""
    home = tmp_path_factory.mktemp("sign-in") / "visionqc-data"
    url = postgres_server.new_schema_url()
    store = pgserver.copy_to_postgres(seed_inspections(home, 30, days=3), url)
    (home / "visionqc.duckdb").unlink()
    store.add_user("olga", "operator", hash_password(PASSWORDS["olga"]))
    store.add_user("lea", "lead", hash_password(PASSWORDS["lea"]))
    return home, url


@pytest.fixture(scope="module")
def plant_server(plant, app_server_at):
    """``with plant_server() as server``: the app on the plant's shared store."""
    home, url = plant
    return lambda: app_server_at(home, env={"VISIONQC_DATABASE_URL": url})


def _sign_in(page, url: str, name: str, wait_for_app) -> None:
    page.goto(url)
    wait_for_app(page)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {name}").wait_for()
    wait_for_app(page)


def _links(page) -> list[str]:
    """The page links of the sidebar's navigation, by name (each link's text ends with its name, after its icon)."""
    return [t.strip().split("\n")[-1] for t in page.locator("[data-testid='stSidebarNav'] a").all_inner_texts()]


def test_an_operator_is_kept_out_and_a_lead_reviews_under_their_own_name(
    plant, plant_server, browser, wait_for_app, screenshot_dir
):
    home, url = plant
    store = Store(home, url=url)
    with plant_server() as server:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(server.url)
        wait_for_app(page)
        page.get_by_role("button", name="Sign in").wait_for()
        assert "History" not in _links(page), "nothing but the form before signing in"
        page.screenshot(path=str(screenshot_dir / "sign_in.png"), full_page=True)

        _sign_in(page, server.url, "olga", wait_for_app)
        assert _links(page) == ["Inspect", "History", "Dashboard", "Explore"]
        # An address typed in (a new browser session: sign in again): the page does not exist for an operator.
        for address in ("review-queue", "models", "users"):
            _sign_in(page, f"{server.url}/{address}", "olga", wait_for_app)
            assert page.locator("h1", has_text="Inspect").is_visible(), address
            assert not page.get_by_role("button", name="Confirm").count()
        page.screenshot(path=str(screenshot_dir / "operator.png"), full_page=True)
        context.close()

        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        _sign_in(page, server.url, "lea", wait_for_app)
        assert {"Review queue", "Models"} <= set(_links(page)) and "Users" not in _links(page)
        first = int(store.review_queue(InspectionFilter(), 0.6)[0][0])
        page.locator("[data-testid='stSidebarNav'] a", has_text="Review queue").click()
        wait_for_app(page)
        page.get_by_role("button", name="Confirm").click()
        wait_for_app(page)
        page.screenshot(path=str(screenshot_dir / "lead_review.png"), full_page=True)
        context.close()
    trail = store.inspection_detail(first)["reviews"]
    assert list(trail["reviewer"]) == ["lea"] and list(trail["kind"]) == ["confirm"]


def test_a_bookmark_opened_first_after_a_restart_asks_for_sign_in_then_opens_its_page(
    plant_server, browser, wait_for_app, screenshot_dir
):
    """Until the entry script has run once in the server's life, Streamlit serves ``pages/`` on its own: the first
    address typed after a start (``/History``, the page file's own name) must still meet the sign-in gate, and
    after signing in the user gets the page they asked for; an operator's bookmark to a lead's page gets nothing of
    it (visionqc.ui.pages)."""
    for address, name, heading in (("History", "lea", "History"), ("Models", "olga", "Inspect")):
        with plant_server() as server:  # a fresh server each time: the first request is the bookmark
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{server.url}/{address}")
            wait_for_app(page)
            page.get_by_role("button", name="Sign in").wait_for()  # the first run after a start: migrations checked
            assert not page.locator("h1", has_text=address).count(), f"{address} ran before sign-in"
            page.screenshot(path=str(screenshot_dir / f"bookmark_{address}.png"), full_page=True)
            page.get_by_role("textbox", name="User name").fill(name)
            page.get_by_role("textbox", name="Password").fill(PASSWORDS[name])
            page.get_by_role("button", name="Sign in").click()
            page.get_by_text(f"Signed in as {name}").wait_for()
            wait_for_app(page)
            assert page.locator("h1", has_text=heading).is_visible(), (address, name)
            context.close()
