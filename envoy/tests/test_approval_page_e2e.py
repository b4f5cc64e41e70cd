"""The approval page an approver decides from, in headless Chromium driven by
Selenium (Debian's chromium and chromium-driver): the request held by the real
filter in real Envoy shows who asks (principal and GitHub-shaped claims), why
(a CI run URL as a real link), what it unlocks, the time left and the
principal's track record; it appears without a reload; approving moves it
into the history with the decider; a grant is revoked from the page; hostile
claim values stay text under the CSP; the page works by keyboard, at 200%
zoom and on a phone. Screenshots of the three views land in target/tmp/."""

from __future__ import annotations

import re
import time

import pytest
import requests
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

import stack as stack_module
from approval_support import (  # noqa: F401 (approver and gated are pytest fixtures)
    ALICE,
    CALLOUT_TOKEN,
    approval_id,
    approver,
    as_approver,
    gated,
    in_background,
    pending_for,
)
from browser import click, element, headless_chromium, present, screenshot, type_into, wait_until
from conftest import RawClient

SCREENSHOTS = stack_module.REPO_ROOT / "target" / "tmp"
RUN_URL = "https://github.com/acme/web/actions/runs/4242424242"
# In Group::"ci" (policies/entities.json), as the approval policy needs.
SUB = "repo:acme/web:ref:refs/heads/main"
GITHUB_CLAIMS = {
    "sub": SUB,
    "repository": "acme/web",
    "ref": "refs/heads/main",
    "ref_protected": "true",
    "job_workflow_ref": "acme/web/.github/workflows/deploy.yml@refs/heads/main",
    "environment": "production",
    "actor": "octocat",
}
DB = "secret/prod/acme/web/db"


@pytest.fixture
def browser(tmp_path):
    with headless_chromium(tmp_path / "chromium") as driver:
        yield driver


def sign_in(browser, approver, who=ALICE) -> None:
    browser.get(approver["url"] + "/")
    type_into(browser, "#token", who[1])
    click(browser, "#login")
    assert element(browser, "#me").text == who[0]


def callout(approver, principal_id: str, resource: str, *, action="read", claims=None, reason="", ttl_s=900) -> dict:
    """A callout as the filter sends it (retry mode: answered at once)."""
    body = {
        "request_id": f"page-{time.monotonic_ns()}",
        "principal": {"type": "Workload", "id": principal_id},
        "claims": claims or {},
        "action": action,
        "resource": f'Secret::"{resource}"',
        "policies": ["page-test-needs-secops"],
        "approvers": "secops",
        "reason": reason,
        "mode": "retry",
        "wait_ms": 0,
        "ttl_s": ttl_s,
    }
    client = RawClient(approver["url"], default_headers={"Authorization": f"Bearer {CALLOUT_TOKEN}"})
    response = client.request("POST", "/v1/approvals", body=body)
    assert response.status == 200, response.text
    return response.json()


def field(article, selector: str) -> str:
    return article.find_element(By.CSS_SELECTOR, selector).text


def countdown_ticks(browser, selector: str) -> None:
    """The page's own script (allowed by the CSP) counts the deadline down."""
    first = element(browser, selector).text
    assert re.fullmatch(r"\d+m \d\ds|\d+s|\d+h \d\dm", first), first
    wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, selector).text != first, f"{selector} to tick", 5)


def test_a_held_request_shows_who_why_what_time_left_and_track_record_then_moves_to_history(
    gated, approver, browser
):
    # An earlier decision on the same secret (another action, so it does not
    # answer this request): the track record must show it.
    earlier = callout(approver, SUB, DB, action="list", claims=GITHUB_CLAIMS, reason="INC-1")
    alice = as_approver(approver, ALICE)
    assert alice.request("POST", f"/v1/approvals/{earlier['approval_id']}/deny", body={"reason": "use the replica"}).status == 200

    sign_in(browser, approver)
    browser.execute_script("window.__notReloaded = true")
    envoy = RawClient(gated.envoy_url, vault_token=gated.root_token)
    jwt = gated.mint_jwt(GITHUB_CLAIMS)
    thread, result = in_background(
        lambda: envoy.get("/v1/secret/data/prod/acme/web/db", jwt=jwt, headers={"X-Secretgate-Reason": RUN_URL}, timeout=40)
    )
    ident = approval_id(pending_for(approver, DB))

    # It appears by itself: the page polls, nobody reloads.
    article = element(browser, f'article[id="{ident}"]', timeout=15)
    assert browser.execute_script("return window.__notReloaded === true"), "the page was reloaded"
    assert element(browser, "#status").text == "1 pending request"

    assert field(article, ".principal") == f"Workload {SUB}"
    for claim, value in GITHUB_CLAIMS.items():
        row = article.find_element(By.CSS_SELECTOR, f'tr[data-claim="{claim}"]')
        assert row.find_element(By.TAG_NAME, "td").text == value, claim
    link = article.find_element(By.CSS_SELECTOR, ".reason a")
    assert link.get_attribute("href") == RUN_URL and link.text == RUN_URL
    assert field(article, "dd.action") == "read"
    assert field(article, "dd.path") == DB
    assert "prod-web-needs-secops" in field(article, "dd.policies")
    assert field(article, "dd.group") == "secops"
    ttl = article.find_element(By.CSS_SELECTOR, "dd.ttl")
    assert int(ttl.get_attribute("data-ttl-s")) > 0 and ttl.text.endswith(f"({ttl.get_attribute('data-ttl-s')} s)")
    countdown_ticks(browser, f'article[id="{ident}"] time.countdown.expires')
    assert present(browser, f'article[id="{ident}"] time.countdown.hold'), "the filter is holding the client"
    assert field(article, ".track-record") == "0 approved, 1 denied, 0 expired"
    assert field(article, ".last-decision").startswith(f"Last decision: denied by {ALICE[0]},")
    screenshot(browser, SCREENSHOTS / "approval-pending.png")

    assert thread.is_alive(), "held while the approver reads"
    click(browser, f'[id="approve-{ident}"]')
    thread.join(timeout=40)
    assert result["response"].status == 200, result["response"].text

    click(browser, "#nav-history")
    row = element(browser, f'#history tr[id="{ident}"]')
    assert row.get_attribute("data-outcome") == "approved"
    assert row.find_element(By.CSS_SELECTOR, ".decider").text == ALICE[0]
    assert row.find_element(By.CSS_SELECTOR, ".grant code").text.startswith("gr_")
    assert present(browser, f'#history tr[id="{earlier["approval_id"]}"][data-outcome="denied"]')
    # Filtered by outcome: only the denial.
    browser.get(approver["url"] + "/history?outcome=denied&principal=acme%2Fweb")
    element(browser, "#history")
    assert not present(browser, f'#history tr[id="{ident}"]')
    assert element(browser, f'#history tr[id="{earlier["approval_id"]}"] .decision-reason').text == "use the replica"
    screenshot(browser, SCREENSHOTS / "approval-history.png")


def test_a_grant_is_revoked_from_the_page_and_the_next_callout_waits_again(approver, browser):
    principal = "repo:acme/api:environment:production"
    resource = "secret/prod/acme/api/signing-key"
    asked = callout(approver, principal, resource, reason="INC-9 key rotation")
    assert asked["status"] == "pending"

    # Decided by keyboard alone: Tab to the Approve button, Enter.
    sign_in(browser, approver)
    element(browser, f'article[id="{asked["approval_id"]}"]')
    for _ in range(60):
        if browser.switch_to.active_element.get_attribute("id") == f'approve-{asked["approval_id"]}':
            break
        ActionChains(browser).send_keys(Keys.TAB).perform()
    else:
        raise AssertionError("the Approve button is not reachable with Tab")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_until(browser, lambda d: not present(d, f'article[id="{asked["approval_id"]}"]'), "the approval to leave the list")

    granted = callout(approver, principal, resource)
    assert granted["status"] == "approved", granted

    click(browser, "#nav-grants")
    row = element(browser, f'#grants tr[id="{granted["grant_id"]}"]')
    assert row.find_element(By.CSS_SELECTOR, ".approver").text == ALICE[0]
    countdown_ticks(browser, f'#grants tr[id="{granted["grant_id"]}"] time.countdown')
    screenshot(browser, SCREENSHOTS / "approval-grants.png")
    click(browser, f'[id="revoke-{granted["grant_id"]}"]')
    wait_until(browser, lambda d: not present(d, f'#grants tr[id="{granted["grant_id"]}"]'), "the grant to go")

    again = callout(approver, principal, resource)
    assert again["status"] == "pending", again
    assert again["approval_id"] != asked["approval_id"]
    browser.get(approver["url"] + "/history?outcome=revoked")
    revoked = element(browser, f'#history tr[id="{asked["approval_id"]}"]')
    assert revoked.find_element(By.CSS_SELECTOR, ".revoked-by").text == ALICE[0]


def test_a_revoke_without_the_session_csrf_token_is_refused(approver):
    principal = "repo:acme/csrf:ref:refs/heads/main"
    resource = "secret/prod/acme/csrf/db"
    asked = callout(approver, principal, resource)
    alice = as_approver(approver, ALICE)
    assert alice.request("POST", f"/v1/approvals/{asked['approval_id']}/approve").status == 200
    grant = callout(approver, principal, resource)["grant_id"]
    session = requests.Session()
    signed = session.post(f"{approver['url']}/login", data={"token": ALICE[1]}, allow_redirects=False)
    assert signed.status_code == 303 and "sg_session" in session.cookies
    forged = session.post(f"{approver['url']}/ui/grants/{grant}/revoke", data={"csrf": "not-the-token"})
    assert forged.status_code == 403
    assert callout(approver, principal, resource)["status"] == "approved", "the grant still stands"


HOSTILE = {
    "repository": "<script>window.__pwned = 1</script>",
    "actor": '"><img src=x onerror="window.__pwned = 2">',
    "ref": "javascript:window.__pwned = 3",
}


@pytest.mark.parametrize(
    "reason",
    ["javascript:window.__pwned = 4", "data:text/html,<script>window.__pwned = 5</script>", "vbscript:msgbox(1)"],
)
def test_hostile_claims_and_non_web_reasons_render_as_text_under_the_csp(approver, browser, reason):
    principal = f"repo:evil/<b>{len(reason)}</b>"
    asked = callout(approver, principal, f"secret/prod/evil/{len(reason)}", claims=HOSTILE, reason=reason)
    sign_in(browser, approver)
    article = element(browser, f'article[id="{asked["approval_id"]}"]')

    assert field(article, ".reason") == reason
    assert not article.find_elements(By.CSS_SELECTOR, ".reason a"), "a non-http(s) reason is never a link"
    for claim, value in HOSTILE.items():
        assert article.find_element(By.CSS_SELECTOR, f'tr[data-claim="{claim}"] td').text == value
    assert not article.find_elements(By.CSS_SELECTOR, "img, script, .principal b b")
    assert field(article, ".principal b") == principal
    assert [s.get_attribute("src") for s in browser.find_elements(By.TAG_NAME, "script")] == [
        approver["url"] + "/static/approvals.js"
    ]
    assert browser.execute_script("return window.__pwned === undefined")
    # The page's own script runs under the CSP: the countdown ticks.
    countdown_ticks(browser, f'article[id="{asked["approval_id"]}"] time.countdown.expires')

    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    page = requests.get(approver["url"] + "/", cookies=cookies)
    assert asked["approval_id"] in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "default-src 'none'" in csp


def test_the_page_is_labelled_and_fits_a_phone_and_200_percent_zoom(approver, browser):
    asked = callout(
        approver,
        "repo:acme/a-very-long-repository-name-that-keeps-going:environment:production",
        "secret/prod/acme/a-very-long-repository-name-that-keeps-going/database/primary/password",
        claims=GITHUB_CLAIMS,
        reason=RUN_URL + "/attempts/1",
    )
    sign_in(browser, approver)
    element(browser, f'article[id="{asked["approval_id"]}"]')
    unlabelled = browser.execute_script(
        """return [...document.querySelectorAll('input:not([type=hidden]), select, button')]
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
            .map(e => e.outerHTML)"""
    )
    assert unlabelled == []
    # A phone (390 CSS px), and a 1280 px window at 200% zoom (640 CSS px): no sideways scrolling.
    for width, name in ((390, "phone"), (640, "zoom-200")):
        browser.set_window_size(width, 900)
        browser.get(approver["url"] + "/")
        element(browser, f'article[id="{asked["approval_id"]}"]')
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name}: the page is {overflow}px wider than the window"
        assert browser.find_element(By.CSS_SELECTOR, f'[id="approve-{asked["approval_id"]}"]').is_displayed()
        screenshot(browser, SCREENSHOTS / f"approval-{name}.png")
