"""A real JupyterLab on 127.0.0.1 driven by Debian's headless Chromium through Playwright.

Shared by the end-to-end tests and ``benchmarks/``. Nothing here downloads a
browser: Playwright launches ``/usr/bin/chromium``.

Inside :func:`shared_jupyter` (``tests/e2e/conftest.py`` opens one for the whole pytest session),
:func:`notebook_in_lab` and :func:`chromium_browser` reuse one JupyterLab server and one Chromium instead of
starting their own; each notebook still gets its own kernel and its own browser context (no shared state).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("MIW_CHROMIUM", "/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "e2e"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A minimal nbformat-4 notebook with one code cell per source string."""
    nb = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src}
            for src in cells
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))
    return path


class JupyterLab:
    """A JupyterLab (or, with ``app="notebook"``, a Jupyter Notebook 7) server process with its own config, data
    and runtime folders. Both front ends expose the same ``window.jupyterapp`` that :class:`NotebookPage` drives."""

    def __init__(self, root_dir: Path, app: str = "jupyterlab") -> None:
        if app not in ("jupyterlab", "notebook"):
            raise ValueError(f"app must be 'jupyterlab' or 'notebook', got {app!r}")
        self.app = app
        self.root_dir = root_dir
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self._home = Path(tempfile.mkdtemp(prefix="miw-lab-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = self._home / "server.log"

    def start(self, timeout: float = 60.0) -> JupyterLab:
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(self._home / "config"),
            JUPYTER_RUNTIME_DIR=str(self._home / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(self._home / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(self._home / "workspaces"),
            IPYTHONDIR=str(self._home / "ipython"),
            PYTHONUNBUFFERED="1",
        )
        # No "get notified about Jupyter news?" toast: offline it is noise, and it can cover what a test clicks.
        notification = (
            self._home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        )
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text('{"fetchNews": "false", "checkForUpdates": false}')
        cmd = [
            sys.executable,
            "-m",
            self.app,
            "--allow-root",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--LabApp.expose_app_in_browser=True"
            if self.app == "jupyterlab"
            else "--JupyterNotebookApp.expose_app_in_browser=True",
        ]
        ready = f"{self.base_url}/api/status?token={self.token}"
        self._proc = start_server(self.app, cmd, env, self.root_dir, self.log_path, ready, timeout)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _api(self, method: str, path: str, timeout: float = 30.0) -> Any:
        request = urllib.request.Request(f"{self.base_url}/api/{path}?token={self.token}", method=method)
        with urllib.request.urlopen(request, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self, notebook: str) -> None:
        """Shut down the kernel of every session open on ``notebook`` (a path relative to ``root_dir``)."""
        for session in self._api("GET", "sessions"):
            if session.get("path") == notebook:
                self._api("DELETE", f"sessions/{urllib.parse.quote(session['id'])}")

    def notebook_url(self, notebook: str, workspace: str = "miw") -> str:
        if self.app == "notebook":  # one document per page
            return f"{self.base_url}/notebooks/{notebook}?token={self.token}"
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"

    def stop(self) -> None:
        stop_server(self._proc)
        shutil.rmtree(self._home, ignore_errors=True)


def start_server(
    name: str, cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path, ready_url: str, timeout: float
) -> subprocess.Popen[bytes]:
    """Run ``cmd`` (its output to ``log_path``) and wait until ``ready_url`` answers 200; if it exits or never
    answers, the error quotes the end of its log."""
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)

    def tail() -> str:
        return log_path.read_text(errors="replace")[-3000:]

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{tail()}")
        try:
            with urllib.request.urlopen(ready_url, timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise TimeoutError(f"{name} did not answer within {timeout}s:\n{tail()}")


def stop_server(proc: subprocess.Popen[bytes] | None) -> None:
    """Terminate a server from :func:`start_server` (killed if it does not exit within 10 s)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def running_lab(root_dir: Path, app: str = "jupyterlab") -> Iterator[JupyterLab]:
    lab = JupyterLab(root_dir, app).start()
    try:
        yield lab
    finally:
        lab.stop()


class SharedJupyter:
    """One JupyterLab server (on ``root_dir``) and one Chromium, started on first use and started again if they
    died, for many notebooks in a row. Only a JupyterLab is shared: a Notebook 7 gets a server of its own."""

    def __init__(self, root_dir: Path) -> None:
        self.root_dir = root_dir.resolve()
        self._lab: JupyterLab | None = None
        self._playwright: Any = None
        self._browser: Any = None

    def lab(self) -> JupyterLab:
        if self._lab is None or not self._lab.alive:
            if self._lab is not None:
                self._lab.stop()
            self._lab = None
            self._lab = JupyterLab(self.root_dir).start()
        return self._lab

    def browser(self) -> Any:
        if self._browser is None or not self._browser.is_connected():
            if self._playwright is None:
                from playwright.sync_api import sync_playwright

                self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        return self._browser

    def close(self) -> None:
        try:
            if self._browser is not None and self._browser.is_connected():
                self._browser.close()
            if self._playwright is not None:
                self._playwright.stop()
        finally:
            self._browser = self._playwright = None
            if self._lab is not None:
                self._lab.stop()
                self._lab = None


_shared: SharedJupyter | None = None


@contextmanager
def shared_jupyter(root_dir: Path) -> Iterator[SharedJupyter]:
    """While open, :func:`notebook_in_lab` (for notebooks under ``root_dir``) and :func:`chromium_browser` reuse one
    JupyterLab server and one Chromium. ``MIW_E2E_SHARED=0`` turns sharing off: every use starts its own again."""
    global _shared
    if os.environ.get("MIW_E2E_SHARED", "1") == "0" or _shared is not None:
        yield _shared or SharedJupyter(root_dir)
        return
    _shared = SharedJupyter(root_dir)
    try:
        yield _shared
    finally:
        shared, _shared = _shared, None
        shared.close()


@contextmanager
def chromium_browser() -> Iterator[Any]:
    """A headless Chromium. Inside :func:`shared_jupyter` it is the shared one; the browser contexts (and pages)
    opened on it inside the ``with`` are closed on exit."""
    if _shared is not None:
        browser = _shared.browser()
        before = set(browser.contexts)
        try:
            yield browser
        finally:
            for context in browser.contexts:
                if context not in before:
                    with suppress(Exception):  # a crashed browser is launched again on next use
                        context.close()
        return

    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:  # Playwright gives each launch a fresh temporary profile
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class NotebookPage:
    """One notebook open in JupyterLab: run cells, talk to its kernel."""

    def __init__(self, page: Any) -> None:
        self.page = page

    def open(self, lab: JupyterLab, notebook: str, timeout_ms: int = 60_000, workspace: str = "miw") -> NotebookPage:
        self.page.goto(lab.notebook_url(notebook, workspace))
        self.wait_kernel_idle(timeout_ms)
        return self

    def wait_kernel_idle(self, timeout_ms: int = 60_000) -> None:
        self.page.wait_for_function(
            "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
            timeout=timeout_ms,
        )

    def run_all(self) -> None:
        self.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def execute(self, code: str, timeout_ms: int = 60_000) -> str:
        """Run ``code`` in the notebook's kernel and return what it printed (raises on error)."""
        result = self.page.evaluate(
            """async ([code, timeout]) => {
              const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
              const future = kernel.requestExecute({ code, silent: false, store_history: false });
              let out = "", err = "";
              future.onIOPub = (msg) => {
                const t = msg.header.msg_type;
                if (t === "stream") out += msg.content.text;
                if (t === "error") err += msg.content.ename + ": " + msg.content.evalue;
              };
              await Promise.race([future.done, new Promise((_, rej) => setTimeout(() => rej(new Error("kernel timeout")), timeout))]);
              return { out, err };
            }""",
            [code, timeout_ms],
        )
        if result["err"]:
            raise AssertionError(f"kernel error running {code!r}: {result['err']}")
        return str(result["out"])

    def python_value(self, expression: str) -> Any:
        """Evaluate a Python expression in the kernel, returned through JSON."""
        out = self.execute(f"import json as _json; print(_json.dumps({expression}))")
        return json.loads(out.strip().splitlines()[-1])

    def python_eventually(self, expression: str, expected: Any, timeout_s: float = 10.0) -> Any:
        """Poll ``expression`` until it equals ``expected`` (view -> kernel sync is asynchronous); returns the last value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.python_value(expression)
            if value == expected or time.monotonic() > deadline:
                return value
            time.sleep(0.2)

    def click_cell(self, selector: str, row: int, col: int) -> None:
        """Click cell (row, col) of the CanvasHeatmap at ``selector`` (see :func:`cell_point`)."""
        width = float(self.page.locator(selector).evaluate("e => +e.dataset.cellWidth"))
        assert width > 2, f"cells of {selector} are too small to click: {width} px"
        self.page.mouse.click(*cell_point(self.page, selector, row, col))


def cell_point(page: Any, selector: str, row: int, col: int) -> tuple[float, float]:
    """Page coordinates of cell (row, col) of the grid at ``selector`` (a CanvasHeatmap, AttentionView's head grid),
    scrolled into view, from the element's data-origin-*/data-cell-* attributes."""
    el = page.locator(selector)
    el.scroll_into_view_if_needed()
    box = el.bounding_box()
    assert box is not None, f"{selector} is not visible"
    at: dict[str, Any] = el.evaluate(
        "e => ({x: +e.dataset.originX, y: +e.dataset.originY, w: +e.dataset.cellWidth, h: +e.dataset.cellHeight})"
    )
    return box["x"] + at["x"] + (col + 0.5) * at["w"], box["y"] + at["y"] + (row + 0.5) * at["h"]


@contextmanager
def notebook_in_lab(
    root: Path, name: str, cells: list[str], height: int = 1100, app: str = "jupyterlab"
) -> Iterator[NotebookPage]:
    """Write a notebook into ``root``, open it in JupyterLab (or Notebook 7: ``app="notebook"``) in Chromium and
    run all its cells. The notebook gets a fresh kernel and a fresh browser context. The server and the browser
    are fresh too, unless :func:`shared_jupyter` is open (JupyterLab only, ``root`` under its folder): then they
    are the shared ones, and on exit the notebook's kernel is shut down and its browser context closed.

    On exit, fails if the page raised an error coming from mi_widgets' front end.
    """
    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"Debian's chromium ({CHROMIUM}) is needed for the end-to-end tests: run `bash .ci/test`, which installs it"
        )
    write_notebook(root / name, cells)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shared = _shared
    if shared is not None and app == "jupyterlab" and root.resolve().is_relative_to(shared.root_dir):
        path = (root.resolve() / name).relative_to(shared.root_dir).as_posix()
        workspace = "miw-" + secrets.token_hex(4)  # its own saved layout: nothing left over from another notebook
        with _open_notebook(shared.lab(), path, height, workspace) as nb:
            yield nb
        return
    # A Notebook 7 page's URL holds the notebook's path from the server's root: it gets a server on ``root``.
    with running_lab(root, app) as lab, _open_notebook(lab, name, height, "miw") as nb:
        yield nb


@contextmanager
def _open_notebook(lab: JupyterLab, path: str, height: int, workspace: str) -> Iterator[NotebookPage]:
    with chromium_browser() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": height})
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            nb = NotebookPage(page).open(lab, path, workspace=workspace)
            nb.run_all()
            yield nb
            assert not [e for e in errors if "mi_widgets" in e or "miw" in e], errors
        finally:
            # A browser or server that crashed is started again for the next notebook: nothing to close then.
            with suppress(Exception):
                context.close()
            if lab.alive:
                try:
                    lab.shutdown_kernels(path)
                except OSError as e:  # the next notebook gets its own kernel anyway
                    warnings.warn(f"could not shut down the kernel of {path}: {e}", stacklevel=1)
