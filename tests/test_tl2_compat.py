"""TransformerLens 2.x ``HookedTransformer`` and SAELens ``SAE`` support, checked in the second environment ``.venv-tl2``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TL2_PYTHON = REPO / ".venv-tl2" / "bin" / "python"


def _run_in_tl2(script: str) -> str:
    assert TL2_PYTHON.exists(), "no TransformerLens 2.x environment: run `bash .ci/setup-tl2` (`bash .ci/test` does)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [str(TL2_PYTHON), str(REPO / "tests" / "compat" / script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_attention_view_on_transformer_lens_2() -> None:
    assert "TL2 OK" in _run_in_tl2("tl2_check.py")


def test_saelens_saes_in_feature_view_and_as_weights() -> None:
    """SAELens StandardSAE/TopKSAE: sizes and hook read, same encode/decode as ours, FeatureView and train_sae on TL 2.x."""
    assert "SAELENS OK" in _run_in_tl2("saelens_check.py")
