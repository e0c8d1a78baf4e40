"""Headless Chromium (Debian's package, installed by `make apt`) driven over the DevTools protocol, to check what a
page of ours really renders: boxes, text, requests, console messages, print layout, screenshots.

The protocol runs over a pipe (``--remote-debugging-pipe``: Chromium reads commands on fd 3 and writes answers and
events on fd 4, each a JSON text ended by a NUL byte), so there is no driver, no port and no Python package to
install: the standard library speaks it. Chromium starts with the flags the machine's notes ask for as root
(no sandbox, no GPU, no background networking, a new empty profile) and is stopped with its process group.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

CANDIDATES = ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio",
         "--hide-scrollbars", "--remote-debugging-pipe")


class BrowserError(Exception):
    pass


def find_chromium():
    """The Chromium binary ($CHROMIUM, or Debian's); BrowserError saying how to install it otherwise."""
    named = os.environ.get("CHROMIUM")
    for path in ((named,) if named else CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    raise BrowserError("no Chromium at %s: run `make apt` (Debian's package chromium) or set CHROMIUM to a Chromium binary"
                       % (named or " or ".join(CANDIDATES)))


class Chromium:
    """One headless Chromium and one page (a tab) in it. ``with Chromium() as browser: browser.open(path)``."""

    def __init__(self, binary=None, timeout=20.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="pgdr-chromium-")
        self.events = []  # every event of the page's session, in order: (method, params)
        self._answers = {}
        self._arrived = threading.Condition()
        self._next_id = 0
        self._session = None
        commands_read, self._commands = os.pipe()
        self._answers_fd, answers_write = os.pipe()
        # Chromium expects the pipe's ends as fds 3 and 4: bash moves them there and execs it (no preexec_fn in a
        # threaded pytest). Both are first moved above 9, so that neither is 3 or 4 already and the two moves cannot
        # overwrite each other; bash, as dash cannot name an fd above 9.
        high_read, high_write = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10), fcntl.fcntl(answers_write, fcntl.F_DUPFD, 10)
        for fd in (commands_read, answers_write):
            os.close(fd)
        wire = 'exec "$0" "$@" 3<&%d 4>&%d %d<&- %d>&-' % (high_read, high_write, high_read, high_write)
        argv = ["/bin/bash", "-c", wire, binary or find_chromium(), *FLAGS, "--user-data-dir=" + self.profile, "about:blank"]
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                        pass_fds=(high_read, high_write), start_new_session=True)
        os.close(high_read)
        os.close(high_write)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            target = self.call("Target.createTarget", url="about:blank", browser=True)["targetId"]
            self._session = self.call("Target.attachToTarget", targetId=target, flatten=True, browser=True)["sessionId"]
            for domain in ("Page", "Network", "Runtime", "Log"):
                self.call(domain + ".enable")
        except BaseException:
            self.close()
            raise

    # --- the protocol ------------------------------------------------------------------------------------

    def _read(self):
        pending = b""
        while True:
            try:
                chunk = os.read(self._answers_fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._arrived:
                    self._answers[None] = {"error": {"message": "Chromium closed its pipe"}}
                    self._arrived.notify_all()
                return
            pending += chunk
            *messages, pending = pending.split(b"\0")
            with self._arrived:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._answers[message["id"]] = message
                    elif message.get("sessionId") == self._session and self._session is not None:
                        self.events.append((message["method"], message.get("params", {})))
                self._arrived.notify_all()

    def call(self, method, browser=False, **params):
        """Send one command (to the page's session, or to the browser) and wait for its answer's result."""
        self._next_id += 1
        number = self._next_id
        message = {"id": number, "method": method, "params": params}
        if not browser:
            message["sessionId"] = self._session
        try:
            os.write(self._commands, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError("Chromium is gone (it closed its pipe) before %s%s" % (method, self._stderr_tail())) from None
        deadline = time.monotonic() + self.timeout
        with self._arrived:
            while number not in self._answers and None not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError("Chromium did not answer %s within %.0f s%s" % (method, self.timeout, self._stderr_tail()))
                self._arrived.wait(left)
            answer = self._answers.pop(number, None) or self._answers[None]
        if "error" in answer:
            raise BrowserError("Chromium refused %s: %s%s" % (method, answer["error"].get("message"), self._stderr_tail()))
        return answer["result"]

    def wait_for(self, method, since=0):
        """The params of the first event ``method`` at or after index ``since`` of self.events, waiting for it."""
        deadline = time.monotonic() + self.timeout
        with self._arrived:
            while True:
                for name, params in self.events[since:]:
                    if name == method:
                        return params
                left = deadline - time.monotonic()
                if left <= 0 or None in self._answers:
                    raise BrowserError("no %s from Chromium within %.0f s%s" % (method, self.timeout, self._stderr_tail()))
                self._arrived.wait(left)

    def _stderr_tail(self):
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-3:]
        return ("; Chromium said: " + " | ".join(tail)) if tail else ""

    # --- a page ------------------------------------------------------------------------------------------

    def open(self, path, width=1280, height=900, media=""):
        """Load the file ``path`` (file://) at a viewport of width x height CSS pixels, with the CSS media type
        ``media`` ("print" for the print layout); returns when its load event has fired and layout is done."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.call("Emulation.setEmulatedMedia", media=media)
        since = len(self.events)
        url = "file://" + os.path.abspath(path)
        answer = self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise BrowserError("Chromium could not open %s: %s" % (url, answer["errorText"]))
        self.wait_for("Page.loadEventFired", since)
        self.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        return since

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (a promise is awaited); BrowserError when it throws."""
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise BrowserError("the page's JavaScript failed: %s" % answer["exceptionDetails"].get("exception", {}).get("description"))
        return answer["result"].get("value")

    def requests(self, since=0):
        """The URLs the page asked for since event ``since`` (its own document included)."""
        return [params["request"]["url"] for name, params in self.events[since:] if name == "Network.requestWillBeSent"]

    def console(self, since=0):
        """(level, text) of what the page logged since event ``since``: console calls, uncaught errors, browser log entries."""
        said = []
        for name, params in self.events[since:]:
            if name == "Runtime.consoleAPICalled":
                said.append((params["type"], " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))))
            elif name == "Runtime.exceptionThrown":
                said.append(("error", params["exceptionDetails"].get("text", "exception")))
            elif name == "Log.entryAdded":
                said.append((params["entry"]["level"], params["entry"]["text"]))
        return said

    def screenshot(self, path, width=1280):
        """A PNG of the whole page (not only the viewport) at ``width`` CSS pixels."""
        height = int(self.evaluate("Math.ceil(document.documentElement.getBoundingClientRect().height)"))
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=max(height, 100), deviceScaleFactor=1, mobile=False)
        self.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(data))
        return path

    def pdf(self):
        """The page printed to PDF (A4, default margins), as bytes."""
        data = self.call("Page.printToPDF", paperWidth=8.27, paperHeight=11.69, printBackground=True)["data"]
        return base64.b64decode(data)

    def close(self):
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the renderer and zygote children too
                self.process.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(5)
        for fd in (self._commands, self._answers_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
