"""Look at the Temporal Web UI the way an operator does: a headless Chromium driven over the
W3C WebDriver protocol (``chromedriver``, plain HTTP + JSON through httpx: no Selenium).

    python -m baton.devstack.webui text URL              # the page's visible text
    python -m baton.devstack.webui screenshot URL OUT.png

Chromium and chromedriver come from the system (Debian: ``apt-get install chromium
chromium-driver``); :func:`browser_binaries` says whether they are there, so tests can skip.
The Web UI is a single-page app that keeps polling a running workflow, so "loaded" means: the
text we wait for is on the page (:meth:`Browser.wait_for_text`), not a load event.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from baton.devstack.local import free_port

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser_binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) when both are installed, else None."""
    browser = next((found for n in CHROMIUM_NAMES if (found := shutil.which(n))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One headless Chromium session (a context manager: the driver and browser end with it)."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        found = browser_binaries()
        if found is None:
            raise WebDriverError(
                "chromium and chromedriver are needed: apt-get install -y chromium chromium-driver"
            )
        self.browser, driver = found
        self.size = (width, height)
        self.port = free_port()
        self.profile = tempfile.TemporaryDirectory(prefix="baton-chromium-")
        self.process = subprocess.Popen(
            [driver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        self.session = ""

    def __enter__(self) -> Browser:
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.http.get("/status").json()["value"]["ready"]:
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.close()
                raise WebDriverError("chromedriver did not become ready within 20 s")
            time.sleep(0.1)
        args = [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--window-size={self.size[0]},{self.size[1]}",
            f"--user-data-dir={self.profile.name}",
        ]  # fmt: skip
        value = self._call(
            "POST",
            "/session",
            {
                "capabilities": {
                    "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": {"binary": self.browser, "args": args},
                    }
                }
            },
        )
        self.session = value["sessionId"]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.session:
            try:
                self.http.delete(f"/session/{self.session}")
            except httpx.HTTPError:
                pass
            self.session = ""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.http.close()
        self.profile.cleanup()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.http.request(method, path, json=body)
        value = answer.json().get("value")
        if answer.status_code >= 400:
            message = value.get("message", value) if isinstance(value, dict) else value
            raise WebDriverError(f"{method} {path}: HTTP {answer.status_code}: {message}")
        return value

    def open(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def text(self) -> str:
        """The page's visible text now, including its same-origin frames (the Web UI renders a
        run's summary and details as Markdown inside iframes)."""
        script = """
            const parts = [document.body ? document.body.innerText : ''];
            for (const frame of document.querySelectorAll('iframe')) {
                try {
                    const body = frame.contentDocument && frame.contentDocument.body;
                    if (body) parts.push(body.innerText);
                } catch (e) { /* another origin: not ours to read */ }
            }
            return parts.join('\\n');
        """
        body = {"script": script, "args": []}
        return str(self._call("POST", f"/session/{self.session}/execute/sync", body))

    def wait_for_text(self, *needles: str, timeout: float = 30.0) -> str:
        """Poll until every needle is in the page's text; the text, or WebDriverError naming
        what is missing."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            missing = [n for n in needles if n not in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                raise WebDriverError(
                    f"not on the page after {timeout:g} s: {missing}; the page says: "
                    f"{' '.join(text.split())[:600]!r}"
                )
            time.sleep(0.25)

    # -- acting on a page (the approver inbox's tests fill forms and click like a person) -------

    def execute(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``) in the page."""
        body = {"script": script, "args": list(args)}
        return self._call("POST", f"/session/{self.session}/execute/sync", body)

    def element(self, css: str, timeout: float = 10.0) -> str:
        """The WebDriver id of the first element matching ``css`` (waits for it to appear)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = self._call(
                    "POST",
                    f"/session/{self.session}/element",
                    {"using": "css selector", "value": css},
                )
                return str(next(iter(found.values())))
            except WebDriverError:
                if time.monotonic() > deadline:
                    raise WebDriverError(
                        f"no element {css!r} on the page after {timeout:g} s"
                    ) from None
                time.sleep(0.1)

    def click(self, css: str) -> None:
        element = self.element(css)
        self._call("POST", f"/session/{self.session}/element/{element}/click", {})

    def type(self, css: str, text: str, *, clear: bool = True) -> None:
        """Type ``text`` into the field ``css`` like a person (keystrokes), clearing it first."""
        element = self.element(css)
        if clear:
            self._call("POST", f"/session/{self.session}/element/{element}/clear", {})
        self._call("POST", f"/session/{self.session}/element/{element}/value", {"text": text})

    def select(self, css: str, value: str) -> None:
        """Choose the option with ``value`` in the select ``css`` (by clicking it)."""
        self.click(f"{css} option[value={json_string(value)}]")

    def title(self) -> str:
        return str(self._call("GET", f"/session/{self.session}/title"))

    def url(self) -> str:
        return str(self._call("GET", f"/session/{self.session}/url"))

    def set_cookie(self, name: str, value: str) -> None:
        """A cookie for the current page's site (open a page of the site first)."""
        cookie = {"name": name, "value": value, "path": "/", "httpOnly": True}
        self._call("POST", f"/session/{self.session}/cookie", {"cookie": cookie})

    def delete_cookies(self) -> None:
        self._call("DELETE", f"/session/{self.session}/cookie")

    def screenshot(self, path: Path) -> Path:
        png = self._call("GET", f"/session/{self.session}/screenshot")
        path.write_bytes(base64.b64decode(png))
        return path


def json_string(value: str) -> str:
    """``value`` as a CSS string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if (
        len(args) < 2
        or args[0] not in ("text", "screenshot")
        or (args[0] == "screenshot" and len(args) != 3)
    ):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    with Browser() as browser:
        browser.open(args[1])
        time.sleep(3)  # let the single-page app fetch and render
        if args[0] == "text":
            print(browser.text())
        else:
            print(browser.screenshot(Path(args[2])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
