"""/docs in a real headless Chromium: every operation listed, "Try it out" works, nothing loaded from elsewhere.

Driven by Python playwright against the machine's own Chromium (the Debian
package; .ci/run installs it): playwright's browser download cannot work on
a network without the internet, which is what the page must survive.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from server.contract import load_contract
from server.process import REPO_ROOT
from server.settings import DEMO_ACCOUNTS
from tests.conftest import StartServer
from tests.support.browser import CHROMIUM_FLAGS, chromium

ARTIFACTS = REPO_ROOT / "test-artifacts"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def contract_operations() -> set[tuple[str, str]]:
    paths = load_contract()["paths"]
    return {(method.upper(), path) for path, item in paths.items() for method in item if method in HTTP_METHODS}


def test_docs_work_offline_in_a_real_browser(start_server: StartServer, tmp_path: Path) -> None:
    executable = chromium()
    from playwright.sync_api import sync_playwright

    server = start_server()
    requested: list[str] = []
    with sync_playwright() as playwright:
        # A persistent context is how playwright takes a user data dir: a fresh one per run.
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{server.url}/docs", wait_until="networkidle")
            page.wait_for_selector(".opblock", timeout=30_000)

            listed = set()
            for block in page.query_selector_all(".opblock"):
                method = block.query_selector(".opblock-summary-method")
                path = block.query_selector(".opblock-summary-path")
                assert method is not None
                assert path is not None
                listed.add((method.inner_text().strip().upper(), path.inner_text().strip().replace("\u200b", "")))
            assert listed == contract_operations()

            list_accounts = page.locator(".opblock-get").filter(has=page.locator('[data-path="/accounts"]'))
            list_accounts.locator(".opblock-summary").first.click()
            list_accounts.get_by_role("button", name="Try it out").click()
            list_accounts.locator('input[placeholder="transaction_id"]').fill("docs-try-it-out")
            list_accounts.get_by_role("button", name="Execute").click()
            body = list_accounts.locator(".live-responses-table .response-col_description pre").first
            body.wait_for(timeout=30_000)
            shown = body.inner_text()
            for user_id, balance in DEMO_ACCOUNTS.items():
                assert f'"user_id": "{user_id}"' in shown
                assert f'"balance": {balance}' in shown

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "docs.png"), full_page=True)

            page.goto(f"{server.url}/redoc", wait_until="networkidle")
            page.wait_for_selector("text=Accounts service", timeout=30_000)
        finally:
            browser.close()

    own = urlsplit(server.url).netloc
    elsewhere = [url for url in requested if urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc != own]
    assert not elsewhere, f"the docs pages requested other hosts: {elsewhere}"
    assert any(url.endswith("/static-docs/swagger-ui-bundle.js") for url in requested)
    assert any(url.endswith("/docs-assets/redoc.standalone.js") for url in requested)
