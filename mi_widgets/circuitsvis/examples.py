"""CircuitsVis's ``circuitsvis.examples``: its ``hello`` demo component, which has no data to show."""

from __future__ import annotations

__all__ = ["hello"]


def hello(
    name: str,
) -> None:
    """CircuitsVis's "Hello {name}" demo of its rendering; mi_widgets has no view for it, so this raises."""
    raise NotImplementedError(
        f"circuitsvis.examples.hello({name!r}) is CircuitsVis's rendering demo (it prints 'Hello, {name}!'); "
        "mi_widgets.circuitsvis has no view for it. Use circuitsvis itself for the demo."
    )
