"""End-to-end in a real browser: Debian's Chromium, driven by Playwright, on the inspector
of a real `tpot http` in front of a recording target, behind a real twistd server.

What a developer does: opens the page, sends requests through the tunnel and watches them
appear, opens one, replays it, replays it with an edit, filters.  A screenshot of each
view is saved under artifacts/ (git-ignored).  Every wait has a deadline.
"""

import hashlib
import json

import pytest

from tests.support.browser import page, screenshot  # noqa: F401 (the fixture)

from .conftest import HOST
from .inspecting import Api, hook_target, inspected, visit  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(120)

WEBHOOK = json.dumps({"event": "invoice.paid", "amount": 4200, "lines": [{"sku": "a-1", "qty": 2}]}).encode()


def rows(page):
    return page.locator("#requests tr.exchange:not([hidden])")


def wait_rows(page, count):
    page.wait_for_function(f"() => document.querySelectorAll('#requests tr.exchange:not([hidden])').length === {count}")
    return rows(page)


def test_requests_appear_live_and_can_be_opened_replayed_edited_and_filtered(server, hook_target, inspected, page):
    page.goto(inspected.inspector_url)
    page.wait_for_selector("#empty:not([hidden])")
    page.wait_for_selector("#tunnels li")
    assert "insp" in page.inner_text("#tunnels")
    screenshot(page, "inspector-empty")

    # Three requests through the tunnel: each shows up without a reload.
    before = len(hook_target.hooks)
    assert visit(server, "GET", "/page?q=a%20b")[0] == 200
    wait_rows(page, 1)
    assert visit(server, "POST", "/hook", WEBHOOK, {"Content-Type": "application/json", "X-Signature": "t=1,v1=abc"})[0] == 200
    wait_rows(page, 2)
    assert visit(server, "POST", "/hook?form=1", b"name=Ada+L&plan=pro",
                 {"Content-Type": "application/x-www-form-urlencoded"})[0] == 200
    listed = wait_rows(page, 3)
    assert [listed.nth(i).locator("td.path").inner_text() for i in range(3)] == ["/hook?form=1", "/hook", "/page?q=a%20b"]
    assert [listed.nth(i).locator("td.method").inner_text() for i in range(3)] == ["POST", "POST", "GET"]
    assert listed.nth(0).locator("td.visitor").inner_text() == HOST
    assert all(listed.nth(i).locator("td.status").inner_text() == "200" for i in range(3))
    screenshot(page, "inspector-list")

    # The JSON one, opened: pretty-printed, with its headers.
    listed.nth(1).click()
    page.wait_for_selector("#detail:not([hidden])")
    page.wait_for_selector("#request-body pre.json")
    assert page.inner_text("#request-body pre.json") == json.dumps(json.loads(WEBHOOK), indent=2)
    assert page.inner_text("#request-line") == "POST /hook HTTP/1.1"
    assert "t=1,v1=abc" in page.inner_text("#request-headers")
    assert "curl" in page.inner_text("#curl") and "/hook" in page.inner_text("#curl")
    screenshot(page, "inspector-json")

    # Replay: the target receives the same request again; the list says what it replays.
    page.click("#replay")
    listed = wait_rows(page, 4)
    assert listed.nth(0).locator(".replay-of").inner_text() == "replay of #" + _id_of(listed.nth(2))
    assert "replayed #" in page.inner_text("#action-state")
    original, replayed = hook_target.hooks[before], hook_target.hooks[-1]
    assert replayed[3] == original[3] == hashlib.sha256(WEBHOOK).hexdigest()
    assert replayed[2]["X-Signature"] == "t=1,v1=abc" and replayed[2]["X-Forwarded-For"] == HOST
    screenshot(page, "inspector-replay")

    # Replay with edits: an edited header reaches the target.
    page.click("#replay-edit")
    page.wait_for_selector("#edit-form:not([hidden])")
    headers = page.input_value("#edit-headers").replace("t=1,v1=abc", "t=2,v1=edited")
    page.fill("#edit-headers", headers + "\nX-Debug: from-the-browser")
    screenshot(page, "inspector-edit")
    page.click("#edit-send")
    wait_rows(page, 5)
    edited = hook_target.hooks[-1]
    assert edited[2]["X-Signature"] == "t=2,v1=edited" and edited[2]["X-Debug"] == "from-the-browser"
    assert edited[3] == hashlib.sha256(WEBHOOK).hexdigest()
    assert len(hook_target.hooks) == before + 4  # the webhook, the form, the replay, the edited one

    # The filter hides the others.
    page.fill("#filter", "GET")
    listed = wait_rows(page, 1)
    assert listed.nth(0).locator("td.path").inner_text() == "/page?q=a%20b"
    page.fill("#filter", "form=1")
    assert wait_rows(page, 1).nth(0).locator("td.method").inner_text() == "POST"
    page.fill("#filter", "4xx")
    wait_rows(page, 0)
    page.wait_for_selector("#empty:not([hidden])")
    page.fill("#filter", "")
    wait_rows(page, 5)
    screenshot(page, "inspector-filter")

    # The form one: a table of its fields.
    rows(page).nth(2).click()
    page.wait_for_selector("#request-body table.pairs")
    assert page.inner_text("#request-body table.pairs").split() == ["name", "Ada", "L", "plan", "pro"]
    screenshot(page, "inspector-form")
    assert page.errors == []


def test_the_page_keeps_what_arrived_before_it_was_opened_and_clears_with_the_api(server, inspected, page):
    visit(server, "GET", "/before-the-page")
    api = Api(inspected.inspector_url)
    api.wait_for(1)
    page.goto(inspected.inspector_url)
    assert wait_rows(page, 1).nth(0).locator("td.path").inner_text() == "/before-the-page"
    page.click("#clear")
    wait_rows(page, 0)
    assert api.requests() == [] and page.errors == []


def _id_of(row):
    return row.get_attribute("data-id")
