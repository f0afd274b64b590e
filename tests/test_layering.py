"""The rooms hold (DEVELOP.md, "Architecture in a page"), checked on the source so that a leak fails here.

- ``analysis/`` is tensors in, tensors out: it imports nothing from ``capture/``, ``widgets/``,
  TransformerLens or ``threading`` (no model runs, no locks).
- ``capture/`` imports nothing from ``widgets/``.
- Only ``capture/`` touches a model: elsewhere no ``W_*`` weight (an SAE's own ``W_enc``/``W_dec`` are not a
  model's) nor TransformerLens bias (``b_U``, ``b_O``, ...) is read, as an attribute or by name
  (``getattr(model, "W_U")``, a helper's ``param(model, "W_U")``), and outside the zoo
  (which builds and trains the bundled models) no ``blocks``, ``ln_final``, hook or run method of a
  model is used and no ``adapter.model`` is reached for.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "mi_widgets"
SAE_WEIGHTS = {"W_enc", "W_dec"}  # a SparseAutoencoder's (analysis/sae.py) or a SAELens SAE's, not a model's
MODEL_BIASES = {"b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_gate", "b_U"}  # TransformerLens's bias names
MODEL_ONLY = {
    "blocks",
    "ln_final",
    "hook_dict",
    "run_with_hooks",
    "run_with_cache",
    "all_composition_scores",
    "original_model",
}


def _modules(room: str | None = None) -> list[Path]:
    root = PACKAGE / room if room else PACKAGE
    return sorted(root.rglob("*.py"))


def _room(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0] if len(path.relative_to(PACKAGE).parts) > 1 else ""


def _imports(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every import in ``path`` (under ``root``), relative imports resolved
    (``from .. import capture`` gives ``mi_widgets.capture`` too)."""
    package = path.relative_to(root).with_suffix("").parts[:-1]  # the package the module is in
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - (node.level - 1)])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def _names_read(path: Path) -> Iterator[tuple[int, str, ast.AST | None]]:
    """``(line, name, owner)`` for every attribute read (``owner.name``) and every name passed as a string to a
    call (``getattr(owner, "name")``, or a helper's ``param(model, "W_U")``; owner None but for getattr/hasattr)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute):
            yield node.lineno, node.attr, node.value
        elif isinstance(node, ast.Call):
            by_name = isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") and node.args
            for arg in node.args[1:]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.isidentifier():
                    yield node.lineno, arg.value, node.args[0] if by_name else None


def _is_adapter(node: ast.AST | None) -> bool:
    """``adapter`` or ``self._adapter`` (any name ending in ``adapter``)."""
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return name.lower().endswith("adapter")


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_analysis_imports_no_capture_widgets_transformer_lens_or_locks() -> None:
    forbidden = ("mi_widgets.capture", "mi_widgets.widgets", "transformer_lens", "threading")
    leaks = [
        f"{_where(path, line)} imports {module}"
        for path in _modules("analysis")
        for line, module in _imports(path)
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    ]
    assert not leaks, "analysis/ is tensors in, tensors out:\n" + "\n".join(leaks)


def test_capture_imports_no_widgets() -> None:
    leaks = [
        f"{_where(path, line)} imports {module}"
        for path in _modules("capture")
        for line, module in _imports(path)
        if module == "mi_widgets.widgets" or module.startswith("mi_widgets.widgets.")
    ]
    assert not leaks, "capture/ sits below the widgets:\n" + "\n".join(leaks)


def test_only_capture_reads_model_weights() -> None:
    leaks = []
    for path in _modules():
        room = _room(path)
        if room == "capture":
            continue
        for line, name, owner in _names_read(path):
            if (name.startswith("W_") and name not in SAE_WEIGHTS) or name in MODEL_BIASES:
                leaks.append(f"{_where(path, line)} reads weight {name}")
            elif room != "zoo" and name in MODEL_ONLY:
                leaks.append(f"{_where(path, line)} reaches into the model: {name}")
            elif room != "zoo" and name == "model" and _is_adapter(owner):
                leaks.append(f"{_where(path, line)} reaches for the adapter's model")
    assert not leaks, "only capture/ (the ModelAdapter) touches a model; add an adapter method:\n" + "\n".join(leaks)


def test_the_checks_see_a_leak(tmp_path: Path) -> None:
    """The checks above are not vacuous: they catch each kind of leak they look for."""
    module = tmp_path / "mi_widgets" / "analysis" / "leaky.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from ..capture.adapter import ModelAdapter\n"
        "from .. import widgets\n"
        "import transformer_lens.utils\n"
        "def f(model, adapter):\n"
        "    a = model.blocks[0].mlp.W_out\n"
        "    b = getattr(model, 'W_U'), read(model, 'W_O')\n"
        "    c = adapter.model\n"
        "    return sae.W_dec, model.cfg, model.b_U\n"
    )
    imports = {m for _, m in _imports(module, tmp_path)}
    assert {"mi_widgets.capture.adapter", "mi_widgets.widgets", "transformer_lens.utils"} <= imports
    names = [(name, _is_adapter(owner)) for _, name, owner in _names_read(module)]
    assert {("W_out", False), ("W_U", False), ("W_O", False), ("blocks", False)} <= set(names)
    assert {("model", True), ("W_dec", False), ("cfg", False), ("b_U", False)} <= set(names)
