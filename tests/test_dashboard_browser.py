"""The dashboard in a real browser (headless Chromium driven by Selenium) against a real
broker with real bridges under stand-in agents.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``; .ci/run installs them) and ``selenium`` (the test extra). Slow: starting
Chromium alone takes seconds on this machine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bridge_support import FakeAgent, asyncio_test, open_bridge, ready
from cli_support import cli
from conftest import BrokerProcess

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra: pip install -e '.[test]'")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver",
                allow_module_level=True)

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

#: Where to keep a screenshot of the page (docs/dashboard.png is made this way).
SCREENSHOT = os.environ.get("CLAUDE_PEERS_DASHBOARD_SCREENSHOT")


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's, through Debian's chromedriver; nothing downloaded)."""
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def make_agent(broker_process: BrokerProcess, make_agent: Callable[..., FakeAgent]) -> Callable[..., FakeAgent]:
    """The shared ``make_agent``, each agent in a folder of its own (``repo-NAME``)."""

    def make(name: str, kind: str = "claude", channels: bool = False) -> FakeAgent:
        cwd = broker_process.base / f"repo-{name}"
        cwd.mkdir(exist_ok=True)
        return make_agent(name, kind, channels, cwd=cwd)

    return make


def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking browser step off the loop, so the test's MCP clients keep reading."""
    return asyncio.to_thread(function, *args)


def wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 20.0) -> Any:
    """Wait for ``condition(driver)`` to be truthy (Selenium's bounded wait).

    The page redraws a card when its peer changes: a card found just before a redraw is
    stale when read, which means "not yet", as a card not found does.
    """
    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def peer_card(driver: Any, name: str) -> Any:
    """The card of the peer called ``name``, or None."""
    for card in driver.find_elements(By.CSS_SELECTOR, "article.peer"):
        if card.find_element(By.CSS_SELECTOR, ".peer-name").text == name:
            return card
    return None


def screenshot(driver: Any, path: str) -> None:
    """The whole page, wide and narrow (``path`` and ``path`` with ``-narrow``)."""
    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    for width, target in ((1280, path), (420, path.replace(".png", "-narrow.png"))):
        driver.set_window_size(width, 1000)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(height + 140, 4000))
        driver.save_screenshot(target)


def flow_lines(driver: Any) -> list[str]:
    """The message flow's lines, newest first."""
    return [line.text for line in driver.find_elements(By.CSS_SELECTOR, "#flow li")]


@asyncio_test
async def test_the_page_shows_peers_live_and_sends_and_kills(make_agent: Callable, broker_process: BrokerProcess,
                                                              browser: Any, short_dir: Path) -> None:
    """Open the link; see the real bridges' peers; a `claude-peers send` appears live; a note
    sent from the page reaches the bridge; a stand-in agent is killed from the page."""
    env = broker_process.env
    api = make_agent("api", "claude", channels=True)
    web = make_agent("web", "codex")
    victim = make_agent("stuck", "claude")
    async with AsyncExitStack() as stack:
        bridges = [await stack.enter_async_context(open_bridge(agent, "codex-mcp-client" if agent.kind == "codex"
                                                               else "claude-code", registered=False))
                   for agent in (api, web, victim)]
        await ready(*bridges)
        to_api, to_web, _ = bridges
        await to_api.text("set_summary", {"summary": "building the REST API"})
        await to_web.text("set_summary", {"summary": "reviewing the parser"})

        done = await in_thread(cli, env, "dashboard", "--print")
        assert done.returncode == 0, done.stderr
        link = done.stdout.strip()
        assert link.startswith("http://127.0.0.1:") and "?token=" in link
        origin = link.split("/?")[0]

        await in_thread(browser.get, link)
        await in_thread(wait, browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert browser.current_url == origin + "/"  # the token left the address bar
        await in_thread(wait, browser, lambda d: all(peer_card(d, n) for n in ("api", "web", "stuck")))
        card = peer_card(browser, "api")
        assert "building the REST API" in card.text and "online" in card.text and "claude-code" in card.text
        assert "codex" in peer_card(browser, "web").text

        # A message sent from the terminal appears in the flow as it happens.
        sent = await in_thread(cli, env, "send", "api", "hello from the terminal")
        assert sent.returncode == 0, sent.stderr
        await in_thread(wait, browser, lambda d: any("cli → api" in line and "shown" in line for line in flow_lines(d)))

        # A note sent from the page (by keyboard: the card's Message button picks the
        # recipient and focuses the text; Tab reaches Send) reaches the Claude bridge.
        await in_thread(lambda: peer_card(browser, "api").find_element(By.CSS_SELECTOR, "button.message").click())
        assert Select(browser.find_element(By.ID, "send-to")).first_selected_option.text.startswith("api ")
        await in_thread(lambda: browser.switch_to.active_element.send_keys("a note from the page", Keys.TAB))
        assert browser.switch_to.active_element.get_attribute("id") == "send-button"
        await in_thread(lambda: browser.switch_to.active_element.send_keys(Keys.ENTER))
        notes = await to_api.channel.wait_for(2)
        assert [n.content for n in notes] == ["hello from the terminal", "a note from the page"]
        assert notes[1].meta["from_id"] == "cli"
        await in_thread(wait, browser, lambda d: "shown" in d.find_element(By.ID, "send-result").text)

        # Kill the stuck agent: the confirmation names its process (pid and command line).
        await in_thread(lambda: peer_card(browser, "stuck").find_element(By.CSS_SELECTOR, "button.kill").click())
        dialog = await in_thread(wait, browser, lambda d: d.find_element(By.ID, "kill-dialog").is_displayed()
                                 and d.find_element(By.ID, "kill-dialog"))
        assert f"process {victim.pid}" in dialog.text and "claude" in browser.find_element(By.ID, "kill-command").text
        await in_thread(lambda: browser.find_element(By.ID, "kill-confirm").click())
        assert await in_thread(victim.process.wait, 15) == -15
        await in_thread(wait, browser, lambda d: "terminated" in d.find_element(By.ID, "kill-result").text)
        await in_thread(lambda: browser.find_element(By.ID, "kill-cancel").click())  # now "Close"
        await in_thread(wait, browser, lambda d: "gone" in peer_card(d, "stuck").text)
        await in_thread(wait, browser, lambda d: "by dashboard" in d.find_element(By.ID, "kills").text)
        if SCREENSHOT:
            await in_thread(screenshot, browser, SCREENSHOT)

