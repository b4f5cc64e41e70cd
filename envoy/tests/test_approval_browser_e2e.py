"""Approval through the web page, end to end: a request held by secretgate.wasm
in real Envoy (hold mode) is released or refused when an approver signs in to
the real approval service's page in headless Chromium (Debian's `chromium`
and `chromium-driver`, installed by envoy/setup.sh, driven by Selenium) and
clicks Approve or Deny. The secret comes from real OpenBao."""

from __future__ import annotations

import pytest

from approval_support import (  # noqa: F401 (approver and gated are pytest fixtures)
    audit_record,
    ALICE,
    BOT,
    SECRETS,
    approval_id,
    approver,
    as_approver,
    gated,
    in_background,
    pending_for,
)
from browser import click, element, headless_chromium, present, type_into, wait_until
from conftest import RawClient


@pytest.fixture
def browser(tmp_path):
    """A fresh headless Chromium (own profile, so no session cookie) per test."""
    with headless_chromium(tmp_path / "chromium") as driver:
        yield driver


def sign_in(browser, approver, who) -> None:
    """The page's login: type the approver token into the form and press Sign in; the
    service answers with an HttpOnly session cookie and a page whose forms carry the CSRF token."""
    browser.get(approver["url"] + "/")
    type_into(browser, "#token", who[1])
    click(browser, "#login")
    assert element(browser, "#me").text == who[0]
    assert browser.execute_script("return document.cookie") == "", "the session cookie is HttpOnly: invisible to scripts"


def sign_out(browser) -> None:
    click(browser, 'form[action="/logout"] button')
    element(browser, "#token")


def show_pending(browser, approver, ident: str) -> str:
    """Open the pending view and return the pending request's text."""
    browser.get(approver["url"] + "/")
    return element(browser, f'article[id="{ident}"]').text


def decided(approver, ident: str) -> dict:
    listed = as_approver(approver, ALICE).get("/v1/approvals?status=all").json()["approvals"]
    return next(item for item in listed if item["id"] == ident)


def held_read(gated, path: str, reason: str):
    jwt = gated.mint_jwt({"repository": "acme/web", "environment": "production"})
    envoy = RawClient(gated.envoy_url, vault_token=gated.root_token)
    return in_background(
        lambda: envoy.get(f"/v1/secret/data/{path}", jwt=jwt, headers={"X-Secretgate-Reason": reason}, timeout=30)
    )


def test_a_held_request_is_released_when_an_approver_clicks_approve_in_chromium(gated, approver, browser):
    # Signed in before the request arrives, so the hold (up to the callout's wait) covers only the decision.
    sign_in(browser, approver, ALICE)
    mark = gated.bao_audit_mark()
    thread, result = held_read(gated, "prod/acme/web/db", "INC-77 browser restore")
    ident = approval_id(pending_for(approver, "secret/prod/acme/web/db"))

    row = show_pending(browser, approver, ident)
    assert "secret/prod/acme/web/db" in row and "INC-77 browser restore" in row, row
    assert "secops" in row, row
    assert thread.is_alive(), "the request is held while the approver decides"
    assert "secret/data/prod/acme/web/db" not in gated.bao_audit_paths(since=mark), "held, not forwarded"

    click(browser, f'[id="approve-{ident}"]')

    thread.join(timeout=30)
    assert not thread.is_alive(), "the click released the held request"
    response = result["response"]
    assert response.status == 200, response.text
    assert response.json()["data"]["data"] == SECRETS["secret/prod/acme/web/db"]
    assert "secret/data/prod/acme/web/db" in gated.bao_audit_paths(since=mark), "forwarded to OpenBao after approval"

    # The page came back to the (now empty) list after the form's redirect.
    wait_until(browser, lambda d: present(d, "#empty") and not present(d, f'article[id="{ident}"]'), "the empty list")

    item = decided(approver, ident)
    assert item["status"] == "approved"
    assert item["decided_by"] == ALICE[0]
    assert item["grant_id"]
    record = audit_record(gated, "prod/acme/web/db")
    assert record["decision"] == "allow"
    assert record["approval"]["outcome"] == "approved"
    assert record["approval"]["approver"] == ALICE[0]
    assert record["approval"]["grant_id"] == item["grant_id"]


def test_a_held_request_is_refused_when_an_approver_clicks_deny_in_chromium(gated, approver, browser):
    # The requester (the JWT's actor) is an approver too, but the page offers them no buttons.
    sign_in(browser, approver, BOT)
    thread, result = held_read(gated, "prod/acme/web/other", "INC-78 browser")
    ident = approval_id(pending_for(approver, "secret/prod/acme/web/other"))
    row = show_pending(browser, approver, ident)
    assert "your own request" in row, row
    assert not present(browser, f'[id="approve-{ident}"]'), "no Approve button for the requester"
    sign_out(browser)

    sign_in(browser, approver, ALICE)
    show_pending(browser, approver, ident)
    assert thread.is_alive(), "still held"
    type_into(browser, f'article[id="{ident}"] input[name="reason"]', "not during the freeze")
    click(browser, f'[id="deny-{ident}"]')

    thread.join(timeout=30)
    assert not thread.is_alive(), "the click released the held request"
    response = result["response"]
    assert response.status == 403, response.text
    assert response.json()["errors"] == ["approval denied"]
    assert b"FAKE-prod-web-other" not in response.body

    item = decided(approver, ident)
    assert item["status"] == "denied"
    assert item["decided_by"] == ALICE[0]
    assert item["decision_reason"] == "not during the freeze"
    record = audit_record(gated, "prod/acme/web/other")
    assert record["approval"]["outcome"] == "denied"
    assert record["approval"]["approver"] == ALICE[0]
