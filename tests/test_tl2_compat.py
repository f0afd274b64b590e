"""AttentionView on TransformerLens 2.x ``HookedTransformer``, in the second environment ``.venv-tl2``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TL2_PYTHON = REPO / ".venv-tl2" / "bin" / "python"


def test_attention_view_on_transformer_lens_2() -> None:
    assert TL2_PYTHON.exists(), "no TransformerLens 2.x environment: run `bash .ci/setup-tl2` (`bash .ci/test` does)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [str(TL2_PYTHON), str(REPO / "tests" / "compat" / "tl2_check.py")],
        capture_output=True, text=True, env=env, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "TL2 OK" in result.stdout
