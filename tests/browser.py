"""Headless Chromium for the tests: Debian's ``chromium`` (installed with apt-get when missing), and a small
DevTools-protocol client over ``--remote-debugging-pipe`` (standard library only) to drive pages: open,
click, press keys, read the DOM, turn JavaScript off, emulate a phone, take a screenshot."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """Debian's chromium; installed with apt-get when missing and possible (CI runs as root). None if not."""
    exe = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
    if exe is not None:
        return exe
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    subprocess.run(["apt-get", *lock, "update"], env=env, check=True, capture_output=True, timeout=900)
    subprocess.run(["apt-get", *lock, "install", "-y", "--no-install-recommends", "chromium"], env=env, check=True, capture_output=True, timeout=1800)
    return "/usr/bin/chromium"


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium driven over the DevTools protocol (messages are JSON ending in a NUL byte; the
    browser reads them on its fd 3 and answers on its fd 4)."""

    def __init__(self, exe: str, profile: Path, timeout: float = 60):
        self.timeout = timeout
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # copies above 9 (F_DUPFD leaves them inheritable), which bash moves to the browser's fds 3 and 4
        r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w))
        self.proc = subprocess.Popen(
            [
                "bash",
                "-c",
                f'exec "$0" "$@" 3<&{r} 4>&{w} {r}<&- {w}>&-',
                exe,
                *CHROMIUM_FLAGS,
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(r, w),
        )
        for fd in (r, w, to_browser_r, from_browser_w):
            os.close(fd)
        self._out, self._in = to_browser_w, from_browser_r
        self._buf = b""
        self._next_id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise BrowserError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise BrowserError(f"{method}: no answer in {self.timeout} s")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserError(f"{method}: the browser closed")
            self._buf += chunk

    def page(self, width: int = 1200, height: int = 900, mobile: bool = False, javascript: bool = True) -> Page:
        """A new tab in a browser context of its own (its own cookies and cache)."""
        context = self.send("Target.createBrowserContext")["browserContextId"]
        target = self.send("Target.createTarget", {"url": "about:blank", "browserContextId": context})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}, session)
        if not javascript:
            self.send("Emulation.setScriptExecutionDisabled", {"value": True}, session)
        return page

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except BrowserError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        os.close(self._in)


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def cdp(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def goto(self, url: str) -> None:
        self._load(lambda: self.cdp("Page.navigate", {"url": url}))

    def reload(self) -> None:
        self._load(lambda: self.cdp("Page.reload", {"ignoreCache": True}))

    def _load(self, start) -> None:
        """Start a page load and wait until the new document has loaded (the old one is marked to tell them apart)."""
        self.eval("window.__leaving = true")
        start()
        self.wait("!window.__leaving && document.readyState === 'complete'")

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (works with the page's own scripts turned off)."""
        res = self.cdp("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression}: {res['exceptionDetails'].get('text')} {res['exceptionDetails'].get('exception', {}).get('description', '')}")
        return res["result"].get("value")

    def wait(self, condition: str, timeout: float = 30) -> Any:
        """Poll until ``condition`` (JavaScript) is truthy, across page loads; returns its value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                value = self.eval(f"(() => {{ try {{ return {condition}; }} catch (e) {{ return null; }} }})()")
                if value:
                    return value
            except BrowserError as e:  # a page being replaced has no context for a moment
                last = e
            time.sleep(0.05)
        raise BrowserError(f"timed out waiting for {condition} ({last})")

    def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element."""
        sel = json.dumps(selector)
        box = self.wait(
            f"(() => {{ const el = document.querySelector({sel}); el.scrollIntoView({{block: 'center'}}); "
            f"const r = el.getBoundingClientRect(); return r.width > 0 && [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.cdp("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1})

    def type(self, text: str) -> None:
        self.cdp("Input.insertText", {"text": text})

    def press(self, key: str) -> None:
        """A key press as a keyboard makes it (a digit or "Enter")."""
        code = {"Enter": 13}.get(key, ord(key.upper()) if len(key) == 1 else 0)
        text = "\r" if key == "Enter" else key
        self.cdp("Input.dispatchKeyEvent", {"type": "keyDown", "key": key, "text": text, "windowsVirtualKeyCode": code})
        self.cdp("Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "windowsVirtualKeyCode": code})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.cdp("Page.captureScreenshot", {"format": "png"})["data"]))
