"""Where every `distillery bench` suite writes: `<name>.json` and `<name>.md`, side by side."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_reports(
    report: dict[str, Any], out_dir: str, name: str, markdown: Callable[[dict[str, Any]], str]
) -> dict[str, Any]:
    """Write `<name>.json` and `<name>.md` (rendered by `markdown`) into `out_dir`; print the Markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (out / f"{name}.md").write_text(text + "\n")
    print(text)
    return report
