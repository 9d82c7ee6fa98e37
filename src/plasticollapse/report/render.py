"""A report as blocks (headings, paragraphs, tables, figures), rendered to Markdown and to a
self-contained HTML page (figures inlined as base64 PNG, no network needed to open it).

:func:`add_section` lays out one study's
:class:`~plasticollapse.report.section.ReportSection`: its title, protocol and notes, then
each table under its caption (a caption's first line is the table's heading, further lines
a paragraph under it), then its figures and the files it wrote.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from plasticollapse.report.format import DASH, fmt

if TYPE_CHECKING:
    from plasticollapse.report.section import ReportSection

EMPTY_TABLE = "(nothing to show: the runs hold no data for this table)"


def render_target(args: tuple[str, ...], default: Path) -> tuple[Path, bool]:
    """``(out, draw)`` of a docs/results render script's command line ``[OUT_DIR]
    [--no-figures]``: the folder to write into (``default`` when none is given; created),
    and whether to draw the figures."""
    folders = [a for a in args if not a.startswith("--")]
    out = Path(folders[0]) if folders else default
    out.mkdir(parents=True, exist_ok=True)
    return out, "--no-figures" not in args


def commands_block(folder: str, provenance: Mapping[str, str]) -> str:
    """The code block that says how a docs/results folder was made: the command that ran
    the runs (``provenance["command"]``), then its ``summarise.py`` (over
    ``provenance["runs_folder"]``) and ``render.py``."""
    script = f"PYTHONPATH=src python docs/results/{folder}"
    return (
        f"```\n{provenance['command']}\n"
        f"{script}/summarise.py {provenance['runs_folder']}\n"
        f"{script}/render.py\n```"
    )


def cell(value: Any) -> str:
    """A DataFrame value as table text: missing -> "—", floats to 3 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, float):
        return fmt(value)
    return str(value)


def relative(path: str | Path, root: Path) -> str:
    """``path`` relative to the report folder (as written), or whole when it lies outside."""
    path = Path(path)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


@dataclass
class Doc:
    """A report as blocks, rendered to both Markdown and HTML from the same content."""

    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        if text:
            self.blocks.append(("p", text))

    def table(self, frame: pd.DataFrame) -> None:
        if len(frame):
            rows = [[cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
            self.blocks.append(("table", [str(c) for c in frame.columns], rows))
        else:
            self.p(EMPTY_TABLE)

    def img(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", Path(path), caption))

    def markdown(self, root: Path) -> str:
        out = []
        for kind, *b in self.blocks:
            if kind == "h":
                out.append("#" * b[0] + " " + b[1])
            elif kind == "p":
                out.append(b[0])
            elif kind == "table":
                escape = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
                lines = ["| " + " | ".join(map(escape, b[0])) + " |", "|" + "---|" * len(b[0])]
                lines += ["| " + " | ".join(map(escape, r)) + " |" for r in b[1]]
                out.append("\n".join(lines))
            elif kind == "img":
                out.append(f"![{b[1]}]({relative(b[0], root)})\n\n*{b[1]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        body = []
        for kind, *b in self.blocks:
            if kind == "h":
                body.append(f"<h{b[0]}>{html.escape(b[1])}</h{b[0]}>")
            elif kind == "p":
                body.append(f"<p>{html.escape(b[0])}</p>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b[0])
                rows = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                    for r in b[1]
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(b[0].read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img alt="{html.escape(b[1])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(b[1])}</figcaption></figure>"
                )
        return HTML_PAGE.format(title=html.escape(title), body="\n".join(body))


def add_section(doc: Doc, section: ReportSection, root: Path, shared: str = "") -> None:
    """Lay out one study's section; ``shared`` lists the config every run of it shares."""
    doc.h(2, section.title)
    doc.p(section.protocol)
    if shared:
        doc.p(f"Shared by every run: {shared}")
    for note in section.notes:
        doc.p(note)
    for caption, frame in section.tables:
        heading, _, text = caption.partition("\n")
        doc.h(3, heading)
        doc.p(text.strip())
        doc.table(frame)
    if section.figures:
        doc.h(3, "Figures")
    for caption, png in section.figures:
        doc.img(png, caption)
    if section.files:
        names = ", ".join(relative(f, root) for f in section.files)
        doc.p(f"Files: {names}.")


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }}
th {{ background: #f2f2f2; }}
tr:nth-child(even) td {{ background: #fafafa; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
figcaption {{ font-size: 0.85em; color: #555; }}
</style></head><body>
{body}
</body></html>
"""
