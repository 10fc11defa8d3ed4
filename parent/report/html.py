"""`Document` -> one self-contained HTML page: inline CSS, figures as PNG data URIs, nothing fetched.

Every text goes through `html.escape`; the page loads no script, font, style sheet or
image from anywhere, so it renders the same offline, archived, or opened years later.
"""
from __future__ import annotations

import base64
import html

from parent.report.document import (
    Block,
    BulletList,
    Document,
    Figure,
    Inline,
    Paragraph,
    Section,
    Subheading,
    Summary,
    Table,
)

__all__ = ["render_html"]

_CSS = """
:root { --ink: #1b2631; --muted: #566573; --line: #c8d0d8; --accent: #1f4e79; --ok: #1e7b45; --warn: #9a5b00; }
* { box-sizing: border-box; }
body { margin: 0; background: #eef1f4; color: var(--ink);
       font: 14px/1.5 "Helvetica Neue", Helvetica, Arial, "Liberation Sans", sans-serif; }
main { max-width: 1040px; margin: 24px auto; background: #fff; padding: 40px 48px;
       box-shadow: 0 1px 4px rgba(0,0,0,.12); }
header h1 { margin: 0; font-size: 26px; color: var(--accent); }
header p.subtitle { margin: 4px 0 20px; color: var(--muted); font-size: 15px; }
h2 { font-size: 19px; color: var(--accent); border-bottom: 2px solid var(--accent); padding-bottom: 4px;
     margin: 36px 0 12px; }
h3 { font-size: 15px; margin: 20px 0 8px; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; word-break: break-all;
       background: #f3f5f7; padding: 0 2px; border-radius: 2px; }
.summary { border: 2px solid var(--ok); border-radius: 6px; padding: 16px 20px; background: #f3faf6; }
.verdict { font-size: 20px; font-weight: bold; color: var(--ok); margin: 0 0 10px; }
.verdict::before { content: "\\2713  "; }
.summary dl { display: grid; grid-template-columns: 170px 1fr; gap: 4px 16px; margin: 0; }
.summary dt { font-weight: bold; color: var(--muted); }
.summary dd { margin: 0; }
nav.toc { margin: 20px 0 0; font-size: 13px; }
nav.toc ul { columns: 2; list-style: none; padding: 0; margin: 0; }
nav.toc a { color: var(--accent); text-decoration: none; }
table { border-collapse: collapse; width: 100%; margin: 10px 0 14px; table-layout: fixed; }
th, td { border: 1px solid var(--line); padding: 6px 8px; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #e8eef4; font-weight: bold; }
tr:nth-child(even) td { background: #fafbfc; }
caption { caption-side: bottom; text-align: left; color: var(--muted); font-size: 12px; padding-top: 4px; }
p.note { border-left: 4px solid var(--warn); background: #fff8ec; padding: 8px 12px; }
figure { margin: 14px 0; text-align: center; }
figure img { max-width: 100%; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
footer { margin-top: 36px; padding-top: 12px; border-top: 1px solid var(--line); color: var(--muted);
         font-size: 12px; }
@media print { body { background: #fff; } main { box-shadow: none; margin: 0; padding: 0; }
               h2 { break-after: avoid; } table, figure { break-inside: avoid; } }
"""


def _inline(content: Inline) -> str:
    out = []
    for run in content:
        text = html.escape(run.text)
        if run.code:
            text = f"<code>{text}</code>"
        if run.bold:
            text = f"<strong>{text}</strong>"
        out.append(text)
    return "".join(out)


def _block(block: Block) -> str:
    if isinstance(block, Subheading):
        return f"<h3>{html.escape(block.text)}</h3>"
    if isinstance(block, Paragraph):
        opening = '<p class="note">' if block.note else "<p>"
        return f"{opening}{_inline(block.content)}</p>"
    if isinstance(block, BulletList):
        return "<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    raise TypeError(f"unknown block {type(block).__name__}")


def _table(table: Table) -> str:
    cols = ""
    if table.widths:
        total = sum(table.widths)
        cols = "<colgroup>" + "".join(f'<col style="width:{100 * w / total:.1f}%">' for w in table.widths) + \
            "</colgroup>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}{cols}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary(summary: Summary) -> str:
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in summary.items)
    return (f'<section class="summary" aria-label="summary"><p class="verdict">{html.escape(summary.verdict)}</p>'
            f"<dl>{items}</dl></section>")


def _section(section: Section) -> str:
    blocks = "\n".join(_block(b) for b in section.blocks)
    return f'<section id="{html.escape(section.anchor)}"><h2>{html.escape(section.title)}</h2>\n{blocks}</section>'


def render_html(document: Document) -> str:
    toc = "".join(f'<li><a href="#{html.escape(s.anchor)}">{html.escape(s.title)}</a></li>'
                  for s in document.sections)
    body = "\n".join(_section(s) for s in document.sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(document.title)}: {html.escape(document.subtitle)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header><h1>{html.escape(document.title)}</h1><p class="subtitle">{html.escape(document.subtitle)}</p></header>
{_summary(document.summary)}
<nav class="toc" aria-label="contents"><ul>{toc}</ul></nav>
{body}
<footer>{html.escape(document.footer)}</footer>
</main>
</body>
</html>
"""
