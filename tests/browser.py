"""Headless Chromium driven over the DevTools protocol, for testing sftkit's HTML reports.

    with Browser() as browser:
        page = browser.open(Path("reports/validate.html"))
        page.evaluate("document.title")
        page.click("#issues th:nth-child(3)")      # real mouse events at the element
        page.type_text("input.filter", "dup")      # real text input into the focused field
        page.screenshot(Path("validate.png"))
        page.problems()                            # console errors, exceptions, dialogs

Debian's ``chromium`` is used (``SFTKIT_CHROMIUM`` overrides the path). The protocol is
spoken with ``websocket-client`` (small, pure Python); Playwright would need its own browser
download, which fails offline. ``python tests/browser.py OUT_DIR`` (``make screenshots``)
renders a report of each kind from sample data and saves a full-page PNG of each.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--mute-audio", "--hide-scrollbars")
INSTALL_HINT = "install Debian's chromium (apt-get install -y chromium, or make chromium) to run the browser tests"


def find_chromium() -> str | None:
    """The Chromium executable: ``$SFTKIT_CHROMIUM`` or the first of CHROMIUM_NAMES on PATH."""
    explicit = os.environ.get("SFTKIT_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if find_chromium() is None:
        return f"no Chromium found ({', '.join(CHROMIUM_NAMES)}): {INSTALL_HINT}"
    try:
        import websocket  # noqa: F401
    except ImportError:
        return "the websocket-client package is missing: pip install -e '.[dev]'"
    return None


class BrowserError(RuntimeError):
    """Chromium could not be started or a protocol command failed."""


class Browser:
    """One headless Chromium process and one DevTools connection (flat sessions per page)."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 900, timeout: float = 30.0):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError(INSTALL_HINT)
        self.width, self.height, self.timeout = width, height, timeout
        self.process: subprocess.Popen | None = None
        self.profile: str | None = None
        self.ws = None
        self._next_id = 0
        self.events: list[dict] = []

    # -- process ----------------------------------------------------------------------------
    def __enter__(self) -> "Browser":
        import websocket

        self.profile = tempfile.mkdtemp(prefix="sftkit-chromium-")
        args = [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
                f"--window-size={self.width},{self.height}", "about:blank"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise BrowserError(f"{self.executable} did not start (exit code {self.process.returncode})")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=self.timeout,
                                              suppress_origin=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection, end the Chromium process this object started, remove its profile."""
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
            self.ws = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    # -- protocol ---------------------------------------------------------------------------
    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its answer; events that arrive meanwhile are kept."""
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            reply = self._receive()
            if reply.get("id") == ident:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
        raise BrowserError(f"{method}: no answer in {self.timeout} s")

    def _receive(self) -> dict:
        message = json.loads(self.ws.recv())
        if "method" in message:
            self.events.append(message)
            if message["method"] == "Page.javascriptDialogOpening":
                # An alert() would block the page: note it (a test fails on it) and dismiss it.
                self.ws.send(json.dumps({"id": 0, "method": "Page.handleJavaScriptDialog",
                                         "params": {"accept": False}, "sessionId": message.get("sessionId")}))
        return message

    def wait_for(self, method: str, session: str, after: int = 0) -> dict:
        """Wait for the event ``method`` of a session (already received ones from index ``after`` count)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events[after:]:
                if event["method"] == method and event.get("sessionId") == session:
                    return event
            if time.monotonic() > deadline:
                raise BrowserError(f"no {method} within {self.timeout} s")
            self._receive()

    def open(self, path: Path | str) -> "Page":
        """Open a local file in a new tab and wait until it has loaded (and its scripts have run)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False}, session=session)
        mark = len(self.events)
        url = Path(path).resolve().as_uri() if not str(path).startswith(("file:", "about:", "data:")) else str(path)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session, after=mark)
        page.evaluate("new Promise(function(r){ requestAnimationFrame(function(){ setTimeout(r, 50); }); })")
        return page


class Page:
    """One tab of a Browser."""

    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, session=self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited); a JS exception raises BrowserError."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            raise BrowserError(f"JavaScript error: {details.get('exception', {}).get('description') or details}")
        return reply.get("result", {}).get("value")

    def click(self, selector: str) -> None:
        """Click the centre of the first element matching ``selector`` with real mouse events."""
        box = self.evaluate(
            f"(function(){{ var e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); var r = e.getBoundingClientRect();"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()")
        if box is None:
            raise BrowserError(f"no element matches {selector!r}")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            params = {"type": kind, "x": box["x"], "y": box["y"]}
            if kind != "mouseMoved":
                params.update(button="left", clickCount=1)
            self.send("Input.dispatchMouseEvent", params)

    def type_text(self, selector: str, text: str) -> None:
        """Focus the element (by clicking it) and type ``text`` into it."""
        self.click(selector)
        for char in text:
            self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": char, "key": char})
            self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": char})

    def screenshot(self, path: Path, full_page: bool = True, max_height: int = 12000) -> Path:
        """Save a PNG of the page (the whole page, up to ``max_height`` pixels)."""
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            height = min(int(size["height"]) + 1, max_height)
            self.send("Emulation.setDeviceMetricsOverride", {"width": self.browser.width, "height": height,
                                                             "deviceScaleFactor": 1, "mobile": False})
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full_page})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and dialogs of this page so far."""
        out = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append("console." + params["type"] + ": " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append("exception: " + str(details.get("exception", {}).get("description") or details.get("text")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.append("log: " + params["entry"].get("text", ""))
            elif method == "Page.javascriptDialogOpening":
                out.append(f"dialog ({params.get('type')}): {params.get('message')}")
        return out


# -- make screenshots ---------------------------------------------------------------------------

def _sample_reports(folder: Path) -> dict[str, Path]:
    """Write a validate, train and eval report from the demo data with the tiny model (about a minute)."""
    from sftkit.cli import main

    demo = Path(__file__).resolve().parents[1] / "demo" / "financial_sentiment"
    spec = str(demo / "spec.yaml")
    folder.mkdir(parents=True, exist_ok=True)
    runs = {
        "validate": ["validate", str(demo / "train.jsonl"), "--spec", spec, "--model", "tiny-random",
                     "--eval-data", str(demo / "test.jsonl"), "--report-dir", str(folder / "validate")],
        "train": ["train", "--data", str(demo / "train.jsonl"), "--spec", spec, "--model", "tiny-random",
                  "--max-steps", "4", "--batch-size", "4", "--save-steps", "100", "--output-dir", str(folder / "run")],
        "eval": ["eval", "--model", str(folder / "run"), "--data", str(demo / "test.jsonl"), "--spec", spec,
                 "--limit", "12", "--max-new-tokens", "4", "--resamples", "200", "--report-dir", str(folder / "eval")],
    }
    reports = {}
    for kind, argv in runs.items():
        try:
            main(argv)
        except SystemExit as exc:
            if exc.code not in (0, 1, None):
                raise RuntimeError(f"sftkit {' '.join(argv)} exited {exc.code}") from None
        found = sorted(folder.rglob(f"{kind}.html")) or (sorted((folder / "run").glob("*.html")) if kind == "train" else [])
        if found:
            reports[kind] = found[0]
    return reports


def main(argv: list[str] | None = None) -> int:
    """``python tests/browser.py OUT_DIR``: a full-page PNG of each report kind."""
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "reports/screenshots")
    reason = missing_reason()
    if reason:
        print(f"screenshots skipped: {reason}")
        return 0
    os.environ.setdefault("SFTKIT_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory(prefix="sftkit-screenshots-") as tmp:
        reports = _sample_reports(Path(tmp))
        with Browser() as browser:
            for kind, report in reports.items():
                page = browser.open(report)
                shot = page.screenshot(out / f"{kind}.png")
                problems = page.problems()
                print(f"{kind}: {shot}" + (f"  PROBLEMS: {problems}" if problems else ""))
    missing = sorted({"validate", "train", "eval"} - set(reports))
    if missing:
        print(f"no report for: {', '.join(missing)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
