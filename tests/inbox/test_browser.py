"""The inbox in a real headless Chromium (Debian's `chromium`, driven by Selenium through
Debian's `chromium-driver`; never a browser that downloads itself).

A reviewer logs in, watches the pending page while an agent's live Evaluate asks for
approval (it appears without a reload), opens it, sees the delegation chain, denies it with
a reason; the agent's WaitApproval returns denied with that reason and reviewer; the run's
timeline shows the decision and the denial. A second approval is approved and its action
allowed once. Pages stay readable at a phone's width, and a hostile label stays text.

Screenshots go to $PROCTOR_TEST_ARTIFACTS/inbox (default build/test-artifacts/inbox).
Without chromium and chromedriver the test is skipped, saying why; scripts/test installs
them and sets PROCTOR_REQUIRE_CHROMIUM=1, which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from proctor.server.auth.tokens import hash_token
from proctor.v1 import approvals_pb2, approvals_pb2_grpc, decisions_pb2, decisions_pb2_grpc
from tests.inbox.helpers import ROOT, SEED_POLICY
from tests.support.ports import free_port
from tests.support.proctor import ProctorProcess, start_proctor

PATH = ["orchestrator", "agent-b", "agent-c"]
BOT = [("authorization", "Bearer bot-token")]
HOSTILE = "<img src=x onerror=alert(1)>"
DENIAL = "PII export outside approved processor list"
PRINCIPALS = f"""\
principals:
  - id: planner-bot
    roles: [agent]
    tenants: [acme]
    agents: ["*"]
    tokens: ["{hash_token('bot-token')}"]
  - id: dana
    roles: [reviewer]
    tenants: [acme]
    groups: [data-governance]
    tokens: ["{hash_token('dana-token')}"]
"""


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    driver = shutil.which("chromedriver") or ""
    if chromium and driver:
        return chromium, driver
    why = ("chromium and chromedriver are not installed (Debian: apt-get install chromium "
           "chromium-driver; scripts/test installs them)")
    if os.environ.get("PROCTOR_REQUIRE_CHROMIUM") == "1":
        pytest.fail(why)
    print(f"SKIP browser test: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    base = Path(os.environ.get("PROCTOR_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")
    out = base / "inbox"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    chromium, chromedriver = _browser_binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    workdir = tmp_path_factory.mktemp("browser")
    (workdir / "principals.yaml").write_text(PRINCIPALS)
    http_port = free_port()
    p = start_proctor(SEED_POLICY, workdir / "proctor", "--principals",
                      str(workdir / "principals.yaml"), "--http-listen",
                      f"127.0.0.1:{http_port}")
    p.http_url = f"http://127.0.0.1:{http_port}"  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        assert p.stop() == 0, p.log()


def evaluate(server: ProctorProcess, run_id: str, approval_id: str = "") -> Any:
    with grpc.insecure_channel(server.address) as ch:
        req = decisions_pb2.EvaluateRequest(
            topic="job.42.send.email", delegation_path=PATH, tenant="acme", run_id=run_id,
            risk_tags=["external", "pii"], labels={"data": "customer-emails", "note": HOSTILE},
            approval_id=approval_id)
        return decisions_pb2_grpc.DecisionsStub(ch).Evaluate(req, metadata=BOT, timeout=10)


class Waiter(threading.Thread):
    """The agent's WaitApproval, open while the reviewer decides."""

    def __init__(self, server: ProctorProcess, approval_id: str) -> None:
        super().__init__(daemon=True)
        self.server, self.approval_id = server, approval_id
        self.result: Any = None

    def run(self) -> None:
        with grpc.insecure_channel(self.server.address) as ch:
            req = approvals_pb2.WaitApprovalRequest(approval_id=self.approval_id,
                                                    timeout_seconds=90)
            self.result = approvals_pb2_grpc.ApprovalsStub(ch).WaitApproval(
                req, metadata=BOT, timeout=100)


def until(driver: Any, check: Callable[[Any], Any], timeout: float = 30.0) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A form post navigates: an element found just before the new page loads goes stale.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=ignored).until(check)


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def found(selector: str) -> Callable[[Any], Any]:
    from selenium.webdriver.common.by import By

    return lambda d: d.find_elements(By.CSS_SELECTOR, selector)


def no_alert(driver: Any) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return alert is None


def test_review_in_chromium(driver: Any, server: ProctorProcess, artifacts: Path) -> None:
    url = server.http_url  # type: ignore[attr-defined]
    driver.get(f"{url}/approvals")
    until(driver, found("#token"))
    assert "/login" in driver.current_url
    css(driver, "#token").send_keys("dana-token")
    css(driver, "#login").click()
    until(driver, found("#pending"))
    assert css(driver, "#principal").text == "dana"
    until(driver, lambda d: css(d, "#live").is_displayed())  # the event stream is open
    driver.execute_script("window.proctorMarker = 42")

    # 1. a live Evaluate asks for approval: the open page shows it without a reload
    d = evaluate(server, "run-browser")
    assert d.decision == decisions_pb2.DECISION_REQUIRE_APPROVAL and d.approval_id
    until(driver, found(f'[data-approval-id="{d.approval_id}"]'))
    assert driver.execute_script("return window.proctorMarker") == 42
    driver.save_screenshot(str(artifacts / "1-pending.png"))

    # 2. open it: the delegation chain, the hostile label as text
    css(driver, f'[data-approval-id="{d.approval_id}"] a.id').click()
    until(driver, found("#chain"))
    assert css(driver, "#chain").text.split() == ["orchestrator", "→", "agent-b", "→",
                                                  "agent-c"]
    assert HOSTILE in driver.find_element("tag name", "main").text
    assert no_alert(driver)
    assert not driver.find_elements("css selector", 'img[src="x"]')
    driver.save_screenshot(str(artifacts / "2-approval.png"))

    # the same page at a phone's width: nothing wider than the screen
    driver.set_window_size(390, 844)
    assert driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1")
    driver.save_screenshot(str(artifacts / "2b-approval-phone.png"))
    driver.set_window_size(1280, 900)

    # 3. deny with a reason while the agent waits
    waiter = Waiter(server, d.approval_id)
    waiter.start()
    css(driver, "#reason").send_keys(DENIAL)
    css(driver, "#deny").click()
    until(driver, lambda drv: css(drv, "#status").text.lower() == "denied")
    assert css(driver, "#reviewer").text == "dana"
    driver.save_screenshot(str(artifacts / "3-denied.png"))

    # 4. the agent's wait returns denied, with the reason and the reviewer
    waiter.join(30)
    a = waiter.result
    assert a is not None and a.status == approvals_pb2.APPROVAL_STATUS_DENIED
    assert (a.reviewer, a.resolution_reason) == ("dana", DENIAL)

    # 5. the run's timeline: the decision and the denial (the audit is written async)
    def timeline(drv: Any) -> bool:
        drv.get(f"{url}/runs/run-browser")
        text = drv.find_element("tag name", "main").text
        return "require_approval" in text.lower() and "denied" in text.lower()

    until(driver, timeline)
    assert DENIAL in driver.find_element("tag name", "main").text
    driver.save_screenshot(str(artifacts / "5-timeline.png"))
    css(driver, f'[data-decision-id="{d.decision_id}"] a[href^="/decisions/"]').click()
    until(driver, lambda drv: d.decision_id in drv.title)
    assert "denied" in driver.find_element("tag name", "main").text


def test_approve_in_chromium_unlocks_the_action(driver: Any, server: ProctorProcess,
                                                artifacts: Path) -> None:
    url = server.http_url  # type: ignore[attr-defined]
    d = evaluate(server, "run-browser-2")
    waiter = Waiter(server, d.approval_id)
    waiter.start()
    driver.get(f"{url}/approvals/{d.approval_id}")
    until(driver, found("#approve"))
    css(driver, "#reason").send_keys("processor checked")
    css(driver, "#approve").click()
    until(driver, lambda drv: css(drv, "#status").text.lower() == "approved")
    waiter.join(30)
    assert waiter.result is not None
    assert waiter.result.status == approvals_pb2.APPROVAL_STATUS_APPROVED
    allowed = evaluate(server, "run-browser-2", approval_id=d.approval_id)
    assert allowed.decision == decisions_pb2.DECISION_ALLOW
    driver.get(f"{url}/approvals/resolved")
    until(driver, found(f'[data-approval-id="{d.approval_id}"]'))
    driver.save_screenshot(str(artifacts / "6-resolved.png"))
    driver.get(f"{url}/policy")
    until(driver, found("#policy-version"))
    assert css(driver, "#reload-error").text == "none"
