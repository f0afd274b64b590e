#!/usr/bin/env python
"""Training benchmark: does watching training live slow it down, and how smooth is the view?

A real JupyterLab in headless Chromium (``tests/e2e/lab.py``) runs one notebook. For each
trainer (SuperpositionToy with its defaults; SAETrainer on planted-feature activations; Grokking with its
defaults, 400 steps) the same
training runs alternately *without a view* (the widget never displayed) and *with the view
attached* (displayed in a cell, the browser drawing every frame it gets), ``--repeats`` times each.

Measured per run: training steps per second (in the kernel, from ``start()`` to the end of
``wait()``), frames pushed per second (kernel) and frames drawn per second (the view's
``data-frames`` counter over the same interval). The kernel uses one torch thread so both
conditions compete for the same cores the same way (the browser runs beside it).

    python benchmarks/training.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._results import RESULTS_MD, write_section  # noqa: E402
from tests.e2e.lab import NotebookPage, chromium_browser, running_lab, write_notebook  # noqa: E402

TARGET_RATIO = 0.9  # steps/s with the view attached, relative to without

SETUP = """\
import time, torch
import mi_widgets as mw
from mi_widgets.analysis import planted_features
torch.set_num_threads(1)
planted, _ = planted_features(200_000, d_in=128, n_features=512, active=8, seed=0)
TRAINERS = {
    "SuperpositionToy": lambda: mw.SuperpositionToy(autostart=False),
    "SAETrainer": lambda: mw.SAETrainer(activations=planted, d_sae=1024, k=16, steps=400),
    "Grokking": lambda: mw.Grokking(steps=400, device="cpu"),
}
pushes = {}


def counted(widget):
    pushes[id(widget)] = 0
    push = widget._push
    def counting(event, reply):
        pushes[id(widget)] += 1
        push(event, reply)
    widget._push = counting
    return widget


def timed(widget):
    pushes[id(widget)] = 0
    t = time.perf_counter()
    widget.start(); widget.wait()
    seconds = time.perf_counter() - t
    assert widget.status == "done", widget.error
    return {"steps": widget.step, "seconds": seconds, "pushed": pushes[id(widget)]}
"""

VIEWS = {
    "SuperpositionToy": "[data-testid=superposition]",
    "SAETrainer": "[data-testid=sae-training]",
    "Grokking": "[data-testid=grokking]",
}


def run(repeats: int) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VIEWS}
    root = Path(tempfile.mkdtemp(prefix="miw-training-bench-"))
    display_cells = [f"attached_{i} = counted(TRAINERS[{name!r}]())\nattached_{i}" for i, name in enumerate(VIEWS)]
    write_notebook(root / "training.ipynb", [SETUP, *display_cells])
    with running_lab(root) as lab, chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        nb = NotebookPage(page).open(lab, "training.ipynb", timeout_ms=120_000)
        nb.run_all()
        for selector in VIEWS.values():
            page.wait_for_selector(selector, timeout=120_000)
        nb.wait_kernel_idle(120_000)
        for i, (name, selector) in enumerate(VIEWS.items()):
            nb.execute(f"timed(counted(TRAINERS[{name!r}]()))", timeout_ms=600_000)  # warm-up, not counted
            for r in range(repeats):
                hidden = json.loads(
                    nb.execute(f"import json; print(json.dumps(timed(counted(TRAINERS[{name!r}]()))))", 600_000)
                )
                before = int(page.locator(selector).get_attribute("data-frames") or 0)
                shown = json.loads(nb.execute(f"import json; print(json.dumps(timed(attached_{i})))", 600_000))
                page.wait_for_function(
                    f"() => document.querySelector('{selector}').dataset.step === '{shown['steps']}'", timeout=30_000
                )
                drawn = int(page.locator(selector).get_attribute("data-frames") or 0) - before
                for condition, result in (("hidden", hidden), ("attached", shown)):
                    runs[name].append(
                        {
                            "condition": condition,
                            "repeat": r,
                            **result,
                            "drawn": drawn if condition == "attached" else 0,
                        }
                    )
                print(
                    f"{name} repeat {r}: {hidden['steps'] / hidden['seconds']:.0f} steps/s without a view, "
                    f"{shown['steps'] / shown['seconds']:.0f} with; drawn {drawn / shown['seconds']:.1f} fps",
                    flush=True,
                )
    return runs


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    out = {}
    for name, rows in runs.items():

        def median(condition: str, key: str, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.median(
                r[key] / r["seconds"] if key != "seconds" else r["seconds"] for r in rows if r["condition"] == condition
            )

        hidden, attached = median("hidden", "steps"), median("attached", "steps")
        out[name] = {
            "steps_hidden": hidden,
            "steps_attached": attached,
            "ratio": attached / hidden,
            "pushed_fps": median("attached", "pushed"),
            "drawn_fps": median("attached", "drawn"),
        }
    return out


def report(summary: dict[str, dict[str, float]], repeats: int, command: str) -> str:
    lines = [
        "## Training with the view attached (`benchmarks/training.py`)",
        "",
        f"Command: `{command}` · {dt.date.today().isoformat()} · {platform.machine()}, {os.cpu_count()} cores, "
        f"headless Chromium beside a one-thread kernel · medians of {repeats} alternating runs per condition",
        "",
        "| trainer | steps/s without a view | steps/s with the view | ratio (target >= 0.9) | frames pushed/s | frames drawn/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        verdict = "met" if s["ratio"] >= TARGET_RATIO else "missed"
        lines.append(
            f"| {name} | {s['steps_hidden']:.0f} | {s['steps_attached']:.0f} | {s['ratio']:.2f} ({verdict}) "
            f"| {s['pushed_fps']:.1f} | {s['drawn_fps']:.1f} |"
        )
    lines += [
        "",
        "SuperpositionToy: defaults (5 features, 2 hidden, 3 sparsities, 3000 steps of batch 1024), frame_rate 30. "
        "SAETrainer: TopK (k 16), d_in 128 -> d_sae 1024, 400 steps of batch 1024 on planted-feature activations, "
        "frame_rate 20. Grokking: defaults (p 67, 40% of pairs, d_model 128, 4 heads, d_mlp 512, full batch), 400 "
        "steps with a check (spectrum, key frequencies, restricted/excluded loss) every 10, frame_rate 10. "
        "Frames drawn/s counts the view's repaints (at most one per animation frame, latest frame wins).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = run(args.repeats)
    summary = summarise(runs)
    command = "python benchmarks/training.py" + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
    text = report(summary, args.repeats, command)
    print(text)
    write_section("training", text, RESULTS_MD)


if __name__ == "__main__":
    main()
