"""benchmarks/RESULTS.md holds one section per benchmark; each script rewrites only its own.

A section is the text between ``<!-- name:start -->`` and ``<!-- name:end -->``, so running one
benchmark never erases another's latest results.
"""

from __future__ import annotations

from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
TITLE = (
    "# Benchmark results\n\nOne section per benchmark script; how to run them and what each number means: README.md.\n"
)


def write_section(name: str, markdown: str, path: Path = RESULTS_MD) -> None:
    """Replace section ``name`` of ``path`` with ``markdown`` (appended if absent; the file is created with a title)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text.split(start, 1)[1]:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = (text.rstrip() or TITLE.rstrip()) + "\n\n" + block + "\n"
    path.write_text(text)
