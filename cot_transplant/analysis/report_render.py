"""The report as data (sections of paragraphs, tables, figures, code), rendered to one HTML file or Markdown.

HTML is self-contained: inline CSS, figures as base64 `data:` URIs, no script and no link
outside the page, so it opens offline. Markdown writes its figures as PNG files beside it.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Para:
    text: str
    missing: bool = False  # an input this section needs is absent: shown as a plain note


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    png: bytes
    caption: str
    name: str  # file stem for Markdown


@dataclass
class Code:
    text: str
    summary: str = ""  # HTML: a collapsed <details> with this summary when given


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; max-width: 1180px;
       margin: 2em auto; padding: 0 1.2em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0.3em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.missing { color: #8a5a00; background: #fff8e6; border-left: 3px solid #e0a800; padding: 0.4em 0.8em; }
nav ul { columns: 2; }
"""


def _h(text: str) -> str:
    return html.escape(str(text), quote=True)


def render_html(title: str, meta: list[str], sections: list[Section]) -> str:
    """One self-contained HTML page."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_h(title)}</title><style>{CSS}</style></head><body>", f"<h1>{_h(title)}</h1>"]
    out += [f'<p class="meta">{_h(line)}</p>' for line in meta]
    out.append("<nav><ul>" + "".join(f'<li><a href="#{s.anchor}">{_h(s.title)}</a></li>' for s in sections)
               + "</ul></nav>")
    for s in sections:
        out.append(f'<section id="{s.anchor}"><h2>{_h(s.title)}</h2>')
        for block in s.blocks:
            out.append(_html_block(block))
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_block(block) -> str:
    if isinstance(block, Para):
        return f'<p class="missing">{_h(block.text)}</p>' if block.missing else f"<p>{_h(block.text)}</p>"
    if isinstance(block, Table):
        caption = f"<caption>{_h(block.caption)}</caption>" if block.caption else ""
        head = "<tr>" + "".join(f"<th>{_h(c)}</th>" for c in block.header) + "</tr>"
        body = "".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table>{caption}<thead>{head}</thead><tbody>{body}</tbody></table>"
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        return (f'<figure><img alt="{_h(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_h(block.caption)}</figcaption></figure>")
    if isinstance(block, Code):
        pre = f"<pre>{_h(block.text)}</pre>"
        return f"<details><summary>{_h(block.summary)}</summary>{pre}</details>" if block.summary else pre
    raise TypeError(f"unknown report block {type(block).__name__}")


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, meta: list[str], sections: list[Section], out: Path) -> str:
    """Markdown text; figures are written as `<out stem>_files/<name>.png` and linked relatively."""
    out = Path(out)
    files = out.parent / f"{out.stem}_files"
    lines = [f"# {title}", ""] + [f"*{m}*  " for m in meta] + [""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for block in s.blocks:
            if isinstance(block, Para):
                lines += [f"> {block.text}" if block.missing else block.text, ""]
            elif isinstance(block, Table):
                if block.caption:
                    lines += [f"**{block.caption}**", ""]
                lines.append("| " + " | ".join(_md_cell(c) for c in block.header) + " |")
                lines.append("|" + "---|" * len(block.header))
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
                lines.append("")
            elif isinstance(block, Figure):
                files.mkdir(parents=True, exist_ok=True)
                name = re.sub(r"[^A-Za-z0-9_.-]+", "_", block.name) + ".png"
                (files / name).write_bytes(block.png)
                lines += [f"![{block.caption}]({files.name}/{name})", "", f"*{block.caption}*", ""]
            elif isinstance(block, Code):
                if block.summary:
                    lines += [f"*{block.summary}*", ""]
                lines += ["```", block.text.rstrip("\n"), "```", ""]
            else:
                raise TypeError(f"unknown report block {type(block).__name__}")
    return "\n".join(lines) + "\n"
