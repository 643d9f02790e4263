"""Headless Chromium, driven by selenium through Debian's chromedriver, that can reach only loopback.

The browser is the optional tool "browser" of tools.py: without Debian's chromium and
chromium-driver the browser tests skip, or fail when CCW_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import base64
import contextlib
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from . import tools

FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-dev-shm-usage",  # a container's /dev/shm is often 64 MiB
    "--window-size=1280,900",
    # Nothing but loopback: no name resolves, and any other address goes to a closed proxy port.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:1",
)


@contextlib.contextmanager
def headless_chromium(user_data_dir: Path, log_path: Path) -> Iterator[Any]:
    """A selenium WebDriver on a fresh profile; Chromium and chromedriver are gone afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    paths = tools.require("browser")
    options.binary_location = paths["chromium"]
    for flag in (*FLAGS, f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    # The driver is given: selenium never runs Selenium Manager, which would download one.
    service = Service(paths["chromedriver"], log_output=str(log_path))
    driver = webdriver.Chrome(options=options, service=service)
    assert service.process is not None
    tree = psutil.Process(service.process.pid)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        processes = [tree, *tree.children(recursive=True)]
        driver.quit()
        _gone, alive = psutil.wait_procs(processes, timeout=10)
        for process in alive:  # a renderer that ignored quit(): no orphan either way
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def send_basic_auth(driver: Any, credentials: str) -> None:
    """Send an Authorization header with every request of the page, sub-resources and XHR included.

    Credentials in the URL (http://user:password@host/) also work with Chromium 156 but end up in the
    page's URLs and history; a DevTools header does not.
    """
    token = base64.b64encode(credentials.encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
    )


def navigation_status(driver: Any) -> int:
    """HTTP status of the page's own document (Navigation Timing's responseStatus)."""
    return int(
        driver.execute_script("return performance.getEntriesByType('navigation')[0].responseStatus")
    )


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file (a screenshot), after checking that it is one."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return int(width), int(height)
