"""Headless Debian chromium driven by Selenium through Debian's chromedriver
(envoy/setup.sh installs both, and the two packages always match).

A missing browser or driver is an error, not a skip. Each browser gets a
throwaway profile, so no session cookie survives between tests, and Selenium
is pointed at the driver binary so it never tries to download one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless=new",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these, chromium keeps calling Google's hosts, which this machine refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,800",
]


@contextlib.contextmanager
def headless_chromium(workdir: Path, *, network_log: bool = False) -> Iterator[WebDriver]:
    """A fresh headless chromium with its own profile under ``workdir``;
    ``network_log`` records the DevTools Network events (``network_requests``)."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.access(binary, os.X_OK):
            raise AssertionError(f"{binary} is missing: run envoy/setup.sh (it installs chromium and chromium-driver)")
    workdir = Path(workdir)
    (workdir / "profile").mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={workdir / 'profile'}")
    if network_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def network_requests(driver: WebDriver) -> list[str]:
    """The URLs the page requested since the last call (needs ``network_log``)."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def wait_until(driver: WebDriver, condition: Callable[[WebDriver], object], what: str, timeout: float = 15.0):
    """Poll ``condition`` until it is truthy; an element replaced mid-check just means not yet."""

    def attempt(d):
        try:
            return condition(d)
        except (StaleElementReferenceException, WebDriverException):
            return None

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(attempt)
    except Exception as error:  # TimeoutException: say what was awaited, and what the page showed
        body = driver.find_element(By.TAG_NAME, "body").text if driver.find_elements(By.TAG_NAME, "body") else ""
        raise AssertionError(f"timed out waiting for {what}; page: {body[:3000]!r}") from error


def element(driver: WebDriver, selector: str, timeout: float = 15.0) -> WebElement:
    return wait_until(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector), selector, timeout)


def present(driver: WebDriver, selector: str) -> bool:
    return bool(driver.find_elements(By.CSS_SELECTOR, selector))


def click(driver: WebDriver, selector: str) -> None:
    """A user's click: WebDriver scrolls the element into view and sends real (trusted) mouse events."""
    element(driver, selector).click()


def type_into(driver: WebDriver, selector: str, text: str) -> None:
    field = element(driver, selector)
    field.click()
    field.send_keys(text)
    assert field.get_attribute("value") == text, f"typed into {selector}: {field.get_attribute('value')!r}"


def screenshot(driver: WebDriver, path: Path, full_page: bool = True) -> Path:
    """A PNG of the page; ``full_page`` grows the window to the document's height first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if full_page:
        width = driver.get_window_size()["width"]
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(max(height, 400) + 150, 8000))
    driver.save_screenshot(str(path))
    return path
