#!/usr/bin/env python
"""Saved-notebook weight: what widget state costs in a saved .ipynb, and the smallest file the design allows.

One notebook (the bundled ``induction-2l``, offline) shows four views: AttentionView, LogitLens, ActivationView
and HeadScan (which displays an AttentionView of its own under it, in a VBox). It is executed and saved

* by nbclient with ``store_widget_state=True`` (its default; what ``jupyter nbconvert --execute`` writes),
* by nbclient with ``store_widget_state=False``,
* by a real JupyterLab with "Save Widget State Automatically" on (``--lab``, the default; ``--no-lab`` skips it):
  the notebook is opened in headless Chromium, run, and saved with ``docmanager:save``,

once with the four views and once with AttentionView alone. The saved files are broken down: each widget model
(its ``_esm``, ``_css``, other traits, binary buffers), the ``image/png`` pictures in the outputs, the rest. Then
the options for a smaller file are computed on the saved files (see ``options``). Writes the ``saved_notebook``
section of benchmarks/RESULTS.md; scratch notebooks go to benchmarks/output/saved_notebook/.

    python benchmarks/saved_notebook.py [--no-lab] [--report-only] [--no-write]
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import json
import platform
import sys
import time
import zlib
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._results import write_section  # noqa: E402

OUT = REPO / "benchmarks" / "output" / "saved_notebook"
STATE_KEY = "application/vnd.jupyter.widget-state+json"
SETUP = (
    "import mi_widgets as mw\n"
    'model = mw.zoo.load("induction-2l")\n'
    'prompt = "The cat sat on the mat. The cat sat on the"'
)
VIEWS = {
    "AttentionView": "mw.AttentionView(model, prompt)",
    "LogitLens": "mw.LogitLens(model, prompt)",
    "ActivationView": 'mw.ActivationView(model, prompt, hook="resid_post")',
    "HeadScan": "mw.HeadScan(model, n_batches=4, batch_size=8).wait(60)",
}
NOTEBOOKS = {"1 view": ["AttentionView"], "4 views": list(VIEWS)}
BUNDLES = {
    "AttentionView": "attention",
    "LogitLens": "logit_lens",
    "ActivationView": "activation",
    "HeadScan": "head_scan",
}
KB = 1000  # sizes in kB = 1000 bytes (files on disk)

# The smallest loader that could replace a bundle in `_esm`: the minified bundle, deflated (raw DEFLATE, level 9),
# in base64, inflated by the browser's DecompressionStream and imported from a blob: URL as anywidget does itself.
# (Not shipped: `options` only measures it; README/RESULTS say why it is not the recommendation.)
LOADER = (
    'const s=new Blob([Uint8Array.from(atob("{b64}"),c=>c.charCodeAt(0))]).stream()'
    '.pipeThrough(new DecompressionStream("deflate-raw"));'
    'const u=URL.createObjectURL(new Blob([await new Response(s).text()],{type:"text/javascript"}));'
    "const m=await import(u);URL.revokeObjectURL(u);export default m.default;\n"
)


def deflated_loader(esm: str) -> str:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = packer.compress(esm.encode()) + packer.flush()
    return LOADER.replace("{b64}", base64.b64encode(raw).decode())


# ----- saving ---------------------------------------------------------------------------------------------


def cells_for(views: list[str]) -> list[str]:
    return [SETUP, *(VIEWS[v] for v in views)]


def nbclient_save(views: list[str], store: bool) -> dict[str, Any]:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells_for(views)]
    NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=store).execute(cwd=str(REPO))
    path = OUT / f"nbclient_{len(views)}_{'state' if store else 'nostate'}.ipynb"
    nbformat.write(nb, path)
    return {"path": path, "nb": json.loads(path.read_text(encoding="utf-8"))}


def lab_saves() -> dict[str, dict[str, Any]]:
    """Open each notebook in a real JupyterLab with saveState on, run it, let every view paint, save it."""
    from tests.e2e.lab import JupyterLab, NotebookPage, chromium_browser, write_notebook

    root = OUT / "lab"
    root.mkdir(parents=True, exist_ok=True)
    lab = JupyterLab(root)
    settings = lab._home / "settings" / "@jupyter-widgets" / "jupyterlab-manager" / "plugin.jupyterlab-settings"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text('{"saveState": true}')  # what the Settings menu's "Save Widget State Automatically" sets
    saved: dict[str, dict[str, Any]] = {}
    lab.start()
    try:
        with chromium_browser() as browser:
            for label, views in NOTEBOOKS.items():
                name = f"lab_{len(views)}.ipynb"
                write_notebook(root / name, cells_for(views))
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                nb = NotebookPage(page).open(lab, name)
                nb.run_all()
                # AttentionView and ActivationView mark a drawn picture with data-painted (HeadScan shows an
                # AttentionView of its own); then every view's output must be there
                painted = sum(v in ("AttentionView", "ActivationView", "HeadScan") for v in views)
                try:
                    page.wait_for_function(
                        f"() => document.querySelectorAll('[data-painted]').length >= {painted}"
                        f" && document.querySelectorAll('.jp-OutputArea-output .miw-root').length >= {len(views)}",
                        timeout=120_000,
                    )
                except Exception:
                    page.screenshot(path=str(OUT / f"lab_{len(views)}_timeout.png"), full_page=True)
                    raise
                nb.wait_kernel_idle(120_000)
                time.sleep(3)
                before = (root / name).stat().st_mtime_ns
                page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
                deadline = time.monotonic() + 30
                while (root / name).stat().st_mtime_ns == before and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1)
                saved[label] = {"path": root / name, "nb": json.loads((root / name).read_text(encoding="utf-8"))}
                page.evaluate("() => window.jupyterapp.commands.execute('kernelmenu:shutdown')")
                page.close()
    finally:
        lab.stop()
    return saved


def lab_checks(saved_with_state: Path) -> list[str]:
    """What saved state does for a reader, in a JupyterLab with the default settings (saveState off):
    reopen the notebook saved with state, look at the views, save it again; and check the deflate loader."""
    import shutil

    from tests.e2e.lab import NotebookPage, chromium_browser, running_lab

    root = OUT / "reopen"
    root.mkdir(parents=True, exist_ok=True)
    path = root / "reopened.ipynb"
    shutil.copy(saved_with_state, path)
    notes = []
    with running_lab(root) as lab, chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        NotebookPage(page).open(lab, path.name)
        time.sleep(10)
        roots, painted, pictures = page.evaluate(
            """() => [document.querySelectorAll('.miw-root').length, document.querySelectorAll('[data-painted]').length,
                      document.querySelectorAll('.jp-OutputArea-output img[src^="data:image/png"]').length]"""
        )
        page.screenshot(path=str(OUT / "reopened.png"), full_page=True)
        notes.append(
            f"Reopened in a fresh JupyterLab (new kernel, cells not run), the notebook saved with state shows "
            f"{roots} view shells restored from the saved state, {painted} of them with data drawn, and {pictures} "
            f"pictures: the views wait for a kernel that does not have them (screenshot: "
            f"`benchmarks/output/saved_notebook/reopened.png`)."
        )
        before = path.stat().st_mtime_ns
        page.evaluate(
            "() => { window.jupyterapp.shell.currentWidget.content.model.sharedModel.setMetadata('touched', 1);"
            " return window.jupyterapp.commands.execute('docmanager:save'); }"
        )
        deadline = time.monotonic() + 30
        while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
            time.sleep(0.2)
        kept = "widgets" in json.loads(path.read_text(encoding="utf-8"))["metadata"]
        notes.append(
            'Saved again from that JupyterLab with "Save Widget State Automatically" off (the default), the old '
            f"widget state {'stays in the file' if kept else 'is dropped'} ({kb(path.stat().st_size)} kB): "
            "turning the setting off does not remove state already saved."
        )
        esm = (REPO / "mi_widgets" / "static" / "attention.js").read_text(encoding="utf-8")
        loader = deflated_loader(esm)
        same = page.evaluate(
            """async ([loader, esm]) => {
              const load = async (text) => {
                const url = URL.createObjectURL(new Blob([text], {type: 'text/javascript'}));
                try { return Object.keys((await import(url)).default); } finally { URL.revokeObjectURL(url); }
              };
              return JSON.stringify(await load(loader)) === JSON.stringify(await load(esm));
            }""",
            [loader, esm],
        )
        notes.append(
            f"The deflate loader of attention.js ({kb(len(loader))} kB for a {kb(len(esm.encode()))} kB bundle), "
            f"imported from a blob: URL as anywidget imports `_esm`, gives the same default export in Chromium: {same}."
        )
    return notes


def html_pictures(nb: dict[str, Any]) -> tuple[int, bool]:
    """PNG pictures in ``jupyter nbconvert --to html`` of ``nb``, and whether it loads the widget manager from unpkg."""
    import re

    import nbformat
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter().from_notebook_node(nbformat.reads(json.dumps(nb), as_version=4))
    return len(re.findall(r'<img[^>]* src="data:image/png', html)), "unpkg.com/@jupyter-widgets/html-manager" in html


SHARED_BUNDLE_JS = """
import * as esbuild from "esbuild";
const [dir, ...views] = process.argv.slice(1);
const contents = views.map((v) => `export { default as ${v} } from "./${v}.ts";`).join("\\n");
const r = await esbuild.build({ stdin: { contents, resolveDir: dir, loader: "ts" }, bundle: true, format: "esm",
  minify: true, target: "es2020", legalComments: "none", write: false, outdir: "out", logLevel: "error" });
console.log(JSON.stringify(Object.fromEntries(r.outputFiles.map((f) => [f.path.split(".").pop(), f.text]))));
"""


def shared_bundle(views: list[str]) -> dict[str, str] | None:
    """One bundle exporting every view in ``views`` (js/src/views/<name>.ts), built like js/build.mjs builds one."""
    import shutil
    import subprocess

    if shutil.which("node") is None:
        return None
    out = subprocess.run(
        ["node", "--input-type=module", "-e", SHARED_BUNDLE_JS, "--", str(REPO / "js" / "src" / "views"), *views],
        cwd=REPO / "js",
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


# ----- measuring -----------------------------------------------------------------------------------------


def file_bytes(nb: dict[str, Any]) -> int:
    """Bytes of ``nb`` as nbformat writes it (sorted keys, indent 1, UTF-8)."""
    import nbformat

    return len(nbformat.writes(nbformat.from_dict(nb)).encode("utf-8"))


def jbytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def widget_state(nb: dict[str, Any]) -> dict[str, Any]:
    return nb.get("metadata", {}).get("widgets", {}).get(STATE_KEY, {}).get("state", {})


def model_label(entry: dict[str, Any]) -> str:
    state = entry["state"]
    if entry["model_name"] == "AnyModel":
        return str(state.get("_anywidget_id", "AnyModel")).rsplit(".", 1)[-1]
    return entry["model_name"]


def breakdown(nb: dict[str, Any]) -> dict[str, Any]:
    """Where the bytes of a saved notebook go. Parts are JSON bytes of the values; 'rest' is what is left."""
    total = file_bytes(nb)
    stripped = copy.deepcopy(nb)
    stripped.get("metadata", {}).pop("widgets", None)
    state_total = total - file_bytes(stripped)
    pngs = [
        len(str(o["data"]["image/png"]).encode())
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    models = []
    for model_id, entry in widget_state(nb).items():
        st = entry["state"]
        other = {k: v for k, v in st.items() if k not in ("_esm", "_css")}
        models.append(
            {
                "id": model_id[:8],
                "model": model_label(entry),
                "esm": jbytes(st["_esm"]) if "_esm" in st else 0,
                "css": jbytes(st["_css"]) if "_css" in st else 0,
                "other": jbytes(other),
                "other_keys": len(other),
                "buffers": jbytes(entry.get("buffers", [])) if entry.get("buffers") else 0,
                "entry": jbytes(entry),
                "esm_value": st.get("_esm"),
            }
        )
    esm = sum(m["esm"] for m in models)
    css = sum(m["css"] for m in models)
    other = sum(m["other"] + m["buffers"] for m in models)
    return {
        "total": total,
        "state": state_total,
        "esm": esm,
        "css": css,
        "other_traits": other,
        "state_structure": state_total - esm - css - other,
        "png": sum(pngs),
        "n_png": len(pngs),
        "rest": total - state_total - sum(pngs),
        "models": models,
    }


def options(nb: dict[str, Any], shared: dict[str, str] | None) -> dict[str, int]:
    """File bytes of ``nb`` under each way of making it smaller (computed on the saved file).

    ``shared``: one bundle (``js``, ``css``) of all the notebook's views, for the rows where it is saved once
    and every model's ``_esm``/``_css`` is a 100-byte reference to it."""
    sizes = {"as saved": file_bytes(nb)}

    def variant(edit: Any) -> int:
        other = copy.deepcopy(nb)
        edit(other)
        return file_bytes(other)

    def deflate(other: dict[str, Any]) -> None:
        for entry in widget_state(other).values():
            if "_esm" in entry["state"]:
                entry["state"]["_esm"] = deflated_loader(entry["state"]["_esm"])

    def dedupe(other: dict[str, Any]) -> None:  # the bundle once per distinct bundle, a 100-byte stub elsewhere
        seen: set[str] = set()
        for entry in widget_state(other).values():
            for key in ("_esm", "_css"):
                value = entry["state"].get(key)
                if value is None:
                    continue
                if value in seen:
                    entry["state"][key] = "x" * 100
                seen.add(value)

    def both(other: dict[str, Any]) -> None:
        dedupe(other)
        deflate(other)

    def no_state(other: dict[str, Any]) -> None:
        other.get("metadata", {}).pop("widgets", None)

    def no_state_no_png(other: dict[str, Any]) -> None:
        no_state(other)
        for cell in other["cells"]:
            for output in cell.get("outputs", []):
                output.get("data", {}).pop("image/png", None)

    def stubs(other: dict[str, Any]) -> None:
        for entry in widget_state(other).values():
            for key in ("_esm", "_css"):
                if key in entry["state"]:
                    entry["state"][key] = "x" * 100

    sizes["bundle deflated + base64 in a loader"] = variant(deflate)
    sizes["each bundle once per notebook"] = variant(dedupe)
    sizes["each bundle once, deflated"] = variant(both)
    if shared is not None and not widget_state(nb):
        sizes["one bundle of the notebook's views, once"] = sizes["as saved"]
        sizes["one bundle of the notebook's views, once, deflated"] = sizes["as saved"]
    elif shared is not None:
        shared_bytes = jbytes(shared.get("js", "")) + jbytes(shared.get("css", ""))
        shared_deflated = jbytes(deflated_loader(shared.get("js", ""))) + jbytes(shared.get("css", ""))
        sizes["one bundle of the notebook's views, once"] = variant(stubs) + shared_bytes
        sizes["one bundle of the notebook's views, once, deflated"] = variant(stubs) + shared_deflated
    sizes["no widget state (setting off)"] = variant(no_state)
    sizes["no widget state, no picture"] = variant(no_state_no_png)
    return sizes


def compare_states(lab_nb: dict[str, Any], client_nb: dict[str, Any]) -> list[str]:
    """How JupyterLab's saved state differs from nbclient's (model ids differ: models are matched by label)."""
    lab = sorted(
        ((model_label(e), e["state"]) for e in widget_state(lab_nb).values()),
        key=lambda m: (m[0], json.dumps(m[1], sort_keys=True)),
    )
    client = sorted(
        ((model_label(e), e["state"]) for e in widget_state(client_nb).values()),
        key=lambda m: (m[0], json.dumps(m[1], sort_keys=True)),
    )
    if [m for m, _ in lab] != [m for m, _ in client]:
        return [f"models saved differ: JupyterLab {[m for m, _ in lab]}, nbclient {[m for m, _ in client]}"]
    dropped: dict[str, set[str]] = {}
    for (label, lab_state), (_, client_state) in zip(lab, client):
        kind = label if label in ("LayoutModel", "VBoxModel") else "each view"
        dropped.setdefault(kind, set()).update(set(client_state) - set(lab_state))
    same = all(a.get(k) == b.get(k) for (_, a), (_, b) in zip(lab, client) for k in ("_esm", "_css"))
    return [
        f"JupyterLab and nbclient save the same {len(lab)} models ({', '.join(m for m, _ in lab)}) with "
        f"byte-identical `_esm` and `_css` ({same}); JupyterLab (`get_state_sync({{drop_defaults: true}})`) leaves "
        "out the keys equal to their front-end defaults: "
        + "; ".join(
            f"{kind}: {len(keys)}" + (f" ({', '.join(sorted(keys))})" if len(keys) <= 12 else " (all of them)")
            for kind, keys in dropped.items()
        )
        + ". nbclient keeps every key the kernel sent, so it writes a few kB more."
    ]


# ----- report ----------------------------------------------------------------------------------------------


def kb(n: int) -> str:
    return f"{n / KB:.1f}"


def pct(part: int, total: int) -> str:
    return f"{100 * part / total:.0f}%"


def report(runs: dict[str, dict[str, Any]], command: str, notes: list[str]) -> str:
    today = dt.date.today().isoformat()
    lines = [
        "## Saved-notebook weight (`benchmarks/saved_notebook.py`)",
        "",
        f"Command: {command} · {today} · {platform.machine()} · anywidget {version('anywidget')}, "
        f"ipywidgets {version('ipywidgets')}, jupyterlab {version('jupyterlab')}, nbclient {version('nbclient')}",
        "",
        'Notebook: `induction-2l`, prompt `The cat sat on the mat. The cat sat on the`; "4 views" = AttentionView, '
        "LogitLens, ActivationView (`resid_post`), HeadScan (4 batches of 8, displayed when done: it shows an "
        'AttentionView of its own under it, so 5 anywidget models); "1 view" = AttentionView. Sizes in kB '
        "(1000 bytes) of the file as written; parts are the JSON bytes of their values.",
        "",
        "### Where the bytes go",
        "",
        "| saved by | notebook | file | widget state | of which `_esm` | `_css` | other traits | state structure"
        " | pictures (png) | rest |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (saver, label), run in runs.items():
        b = run["breakdown"]
        lines.append(
            f"| {saver} | {label} | {kb(b['total'])} | {kb(b['state'])} ({pct(b['state'], b['total'])}) "
            f"| {kb(b['esm'])} ({pct(b['esm'], b['total'])}) | {kb(b['css'])} | {kb(b['other_traits'])} "
            f"| {kb(b['state_structure'])} | {kb(b['png'])} ({b['n_png']}) | {kb(b['rest'])} |"
        )
    for saver in dict.fromkeys(s for s, _ in runs):
        if (saver, "4 views") not in runs or not runs[saver, "4 views"]["breakdown"]["models"]:
            continue
        lines += [
            "",
            f"### Per widget model, 4 views, saved by {saver}",
            "",
            "| model | entry | `_esm` | `_css` | other traits (keys) | buffers |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for m in sorted(runs[saver, "4 views"]["breakdown"]["models"], key=lambda m: -m["entry"]):
            lines.append(
                f"| {m['model']} | {m['entry']:,} | {m['esm']:,} | {m['css']:,} | {m['other']:,} ({m['other_keys']})"
                f" | {m['buffers']:,} |"
            )
    names = list(next(iter(runs.values()))["options"])
    lines += [
        "",
        "### Options (file size in kB)",
        "",
        "| option | " + " | ".join(f"{s}, {label}" for s, label in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for name in names:
        row = [kb(run["options"][name]) for run in runs.values()]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    key = ("JupyterLab (saveState on)", "4 views")
    if key in runs:
        o = runs[key]["options"]
        full = o["as saved"]

        def cut(name: str) -> str:
            return f"{kb(o[name])} kB ({100 * (o[name] - full) / full:+.0f}%)"

        lines += [
            "",
            f"### Options ranked (4 views saved by JupyterLab: {kb(full)} kB)",
            "",
            f"1. **No widget state: {cut('no widget state (setting off)')}**, of which the pictures are "
            f"{kb(runs[key]['breakdown']['png'])} kB. The setting off (JupyterLab's default), "
            "`store_widget_state=False`, or `metadata.widgets` deleted. Costs nothing mi_widgets uses: saved state "
            "cannot show data without the kernel (see the notes), and without it nbconvert exports the pictures.",
            "2. One bundle of the notebook's views, saved once, deflated: "
            + cut("one bundle of the notebook's views, once, deflated")
            + ". "
            "Needs a shared model that every view's `_esm` (then a small stub) loads its code from; anywidget has "
            "none (each model's `_esm` is imported on its own), and a page-global cache breaks when the model that "
            "carried the code is closed or restored after the others. Not built.",
            f"3. Each view's bundle deflated in a loader: {cut('bundle deflated + base64 in a loader')}. Works where "
            "`DecompressionStream('deflate-raw')` does (Chrome/Edge 103, Firefox 113, Safari 16.4; `gzip` from "
            "Chrome 80 for 18 bytes more) and blob: imports do (anywidget itself imports `_esm` that way); costs "
            "one more module import per view and unreadable sources in devtools; leaves the reader's problems "
            "(empty shells, CDN export) as they are. Not built.",
            f"4. Each bundle once per notebook: {cut('each bundle once per notebook')}: the mechanism of 2 for "
            "repeated bundles only.",
        ]
    lines += ["", "### Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-lab", action="store_true", help="skip the real JupyterLab save (nbclient only)")
    parser.add_argument("--no-write", action="store_true", help="print the section; leave RESULTS.md alone")
    parser.add_argument(
        "--report-only", action="store_true", help="measure the notebooks the last run saved in benchmarks/output/"
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    def load(path: Path) -> dict[str, Any]:
        return {"path": path, "nb": json.loads(path.read_text(encoding="utf-8"))}

    saves: dict[tuple[str, str], dict[str, Any]] = {}
    if not args.no_lab:
        print("JupyterLab, saveState on ...", flush=True)
        lab = (
            {label: load(OUT / "lab" / f"lab_{len(views)}.ipynb") for label, views in NOTEBOOKS.items()}
            if args.report_only
            else lab_saves()
        )
        for label, save in lab.items():
            saves["JupyterLab (saveState on)", label] = save
    for label, views in [*NOTEBOOKS.items(), ("4 views", None)]:
        store = views is not None
        views = views or NOTEBOOKS["4 views"]
        print(f"nbclient, {label}, store_widget_state={store} ...", flush=True)
        path = OUT / f"nbclient_{len(views)}_{'state' if store else 'nostate'}.ipynb"
        save = load(path) if args.report_only else nbclient_save(views, store)
        saves[f"nbclient store_widget_state={store}", label] = save

    bundles = {label: shared_bundle([BUNDLES[v] for v in views]) for label, views in NOTEBOOKS.items()}
    runs = {
        key: {**save, "breakdown": breakdown(save["nb"]), "options": options(save["nb"], bundles[key[1]])}
        for key, save in saves.items()
    }
    notes = []
    exports = []
    for key, run in runs.items():
        pictures, cdn = html_pictures(run["nb"])
        exports.append(f"{key[0]}, {key[1]}: {pictures} pictures" + (" and the unpkg.com loader" if cdn else ""))
    notes.append(
        "`jupyter nbconvert --to html`: "
        + "; ".join(exports)
        + ". With widget state the export replaces each picture by the widget manager from a CDN: offline it draws "
        "nothing, and online the views it draws have no kernel to ask for their data."
    )
    everything = shared_bundle(sorted(p.stem for p in (REPO / "js" / "src" / "views").glob("*.ts")))
    if everything is not None:
        notes.append(
            f"One bundle of all {len(list((REPO / 'js' / 'src' / 'views').glob('*.ts')))} views: "
            f"{kb(jbytes(everything['js']))} kB JS + {kb(jbytes(everything.get('css', '')))} kB CSS "
            f"({kb(jbytes(deflated_loader(everything['js'])))} kB JS deflated in a loader)."
        )
    if ("JupyterLab (saveState on)", "4 views") in saves:
        lab4 = saves["JupyterLab (saveState on)", "4 views"]["nb"]
        client4 = saves["nbclient store_widget_state=True", "4 views"]["nb"]
        notes += compare_states(lab4, client4)
    for key, run in runs.items():
        models = run["breakdown"]["models"]
        esms = [m["esm_value"] for m in models if m["esm_value"] is not None]
        if key[1] == "4 views" and len(esms) != len(set(esms)):
            dup = sum(m["esm"] for m in models if m["esm_value"] is not None) - sum(jbytes(e) for e in set(esms))
            notes.append(
                f"{key[0]}, {key[1]}: {len(esms)} `_esm` copies, {len(set(esms))} distinct ({kb(dup)} kB repeated)"
            )
    if ("JupyterLab (saveState on)", "4 views") in saves:
        print("JupyterLab, reopening the saved notebook ...", flush=True)
        notes += lab_checks(saves["JupyterLab (saveState on)", "4 views"]["path"])
    kept = [a for a in sys.argv[1:] if a not in ("--report-only", "--no-write")]
    command = "`python " + " ".join(["benchmarks/saved_notebook.py", *kept]) + "`"
    if args.report_only:
        command += " (this report rewritten from that run's files with `--report-only`)"
    section = report(runs, command, notes)
    print(section)
    if not args.no_write:
        write_section("saved_notebook", section)


if __name__ == "__main__":
    main()
