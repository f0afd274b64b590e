"""A real marimo app server on 127.0.0.1 (``marimo run``) driven by Debian's headless Chromium through Playwright.

marimo renders every ``mo.ui.anywidget`` inside a shadow root: Playwright's CSS locators pierce it,
``document.querySelector`` does not.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .lab import CHROMIUM, OUTPUT, _free_port, chromium_browser, start_server, stop_server


class MarimoApp:
    """``marimo run app.py`` with its own config/cache/state folders; each page that opens it gets its own kernel."""

    def __init__(self, app: Path) -> None:
        self.app = app
        self.port = _free_port()
        self._home = Path(tempfile.mkdtemp(prefix="miw-marimo-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = self._home / "server.log"

    def start(self, timeout: float = 60.0) -> MarimoApp:
        env = dict(os.environ)
        env.update(
            XDG_CONFIG_HOME=str(self._home / "config"),
            XDG_CACHE_HOME=str(self._home / "cache"),
            XDG_STATE_HOME=str(self._home / "state"),
            MARIMO_SKIP_UPDATE_CHECK="1",
            PYTHONUNBUFFERED="1",
        )
        if importlib.util.find_spec("marimo") is None:
            raise RuntimeError("marimo is needed for its end-to-end tests: run `bash .ci/setup` (a dev dependency)")
        marimo = Path(sys.executable).with_name("marimo")
        cmd = [str(marimo), "run", str(self.app), "--headless", "--host=127.0.0.1", f"--port={self.port}"]
        cmd += ["--no-token", "--no-sandbox", "--no-check"]
        ready = f"{self.base_url}/health"
        self._proc = start_server("marimo", cmd, env, self.app.parent, self.log_path, ready, timeout)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_server(self._proc)
        shutil.rmtree(self._home, ignore_errors=True)


@contextmanager
def marimo_page(app: Path, height: int = 1100) -> Iterator[Any]:
    """Serve ``app`` with ``marimo run`` and open it in Chromium with every request off 127.0.0.1 refused.

    On exit, fails if the page raised an error coming from mi_widgets' front end.
    """
    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"Debian's chromium ({CHROMIUM}) is needed for the end-to-end tests: run `bash .ci/test`, which installs it"
        )
    OUTPUT.mkdir(parents=True, exist_ok=True)
    server = MarimoApp(app).start()
    try:
        with chromium_browser() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            def local_only(route: Any) -> None:
                url = route.request.url
                if url.startswith(server.base_url + "/") or url.startswith(("data:", "blob:")):
                    route.continue_()
                else:
                    route.abort()

            page.route("**/*", local_only)
            page.goto(server.base_url + "/")
            yield page
            assert not [e for e in errors if "mi_widgets" in e or "miw" in e], errors
    except BaseException:
        print(f"marimo server log:\n{server.log()}", file=sys.stderr)
        raise
    finally:
        server.stop()
