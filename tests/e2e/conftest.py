"""End-to-end fixtures: one JupyterLab server and one Chromium for the whole session.

Starting a server and a browser costs seconds per module; :func:`tests.e2e.lab.shared_jupyter` lets every
``notebook_in_lab`` (and ``chromium_browser``) of the session reuse them. Each notebook still gets its own kernel
and its own browser context, shut down and closed when its module is done, and a server or browser that died is
started again for the next module. ``MIW_E2E_SHARED=0`` gives every module its own server and browser again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lab import SharedJupyter, shared_jupyter


@pytest.fixture(scope="session", autouse=True)
def shared_jupyter_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedJupyter]:
    """Started lazily: a run that opens no notebook starts no server and no browser."""
    with shared_jupyter(tmp_path_factory.getbasetemp()) as shared:
        yield shared
