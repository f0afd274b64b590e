"""A real JupyterLab on 127.0.0.1 driven by Debian's headless Chromium through Playwright.

Shared by the end-to-end tests and ``benchmarks/``. Nothing here downloads a
browser: Playwright launches ``/usr/bin/chromium``.
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
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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
        log = self.log_path.open("wb")
        self._proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.app} exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"{self.app} did not answer within {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, notebook: str, workspace: str = "miw") -> str:
        if self.app == "notebook":  # one document per page
            return f"{self.base_url}/notebooks/{notebook}?token={self.token}"
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        shutil.rmtree(self._home, ignore_errors=True)


@contextmanager
def running_lab(root_dir: Path, app: str = "jupyterlab") -> Iterator[JupyterLab]:
    lab = JupyterLab(root_dir, app).start()
    try:
        yield lab
    finally:
        lab.stop()


@contextmanager
def chromium_browser() -> Iterator[Any]:
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

    def open(self, lab: JupyterLab, notebook: str, timeout_ms: int = 60_000) -> NotebookPage:
        self.page.goto(lab.notebook_url(notebook))
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
        """Click cell (row, col) of the CanvasHeatmap at ``selector``, placed by its data-origin-*/data-cell-* attributes."""
        el = self.page.locator(selector)
        el.scroll_into_view_if_needed()
        box = el.bounding_box()
        assert box is not None, f"{selector} is not visible"
        at: dict[str, Any] = el.evaluate(
            "e => ({x: +e.dataset.originX, y: +e.dataset.originY, w: +e.dataset.cellWidth, h: +e.dataset.cellHeight})"
        )
        assert at["w"] > 2, f"cells of {selector} are too small to click: {at}"
        self.page.mouse.click(box["x"] + at["x"] + (col + 0.5) * at["w"], box["y"] + at["y"] + (row + 0.5) * at["h"])


@contextmanager
def notebook_in_lab(
    root: Path, name: str, cells: list[str], height: int = 1100, app: str = "jupyterlab"
) -> Iterator[NotebookPage]:
    """Write a notebook into ``root``, open it in a fresh JupyterLab (or Notebook 7: ``app="notebook"``) in
    Chromium and run all its cells.

    On exit, fails if the page raised an error coming from mi_widgets' front end.
    """
    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"Debian's chromium ({CHROMIUM}) is needed for the end-to-end tests: run `bash .ci/test`, which installs it"
        )
    write_notebook(root / name, cells)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with running_lab(root, app) as lab, chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": height})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        nb = NotebookPage(page).open(lab, name)
        nb.run_all()
        yield nb
        assert not [e for e in errors if "mi_widgets" in e or "miw" in e], errors
