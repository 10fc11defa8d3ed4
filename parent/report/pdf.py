"""`Document` -> PDF bytes with reportlab's platypus: the same model as the HTML page, no browser needed.

reportlab's built-in Helvetica and Courier are used, so the file embeds no font and
renders the same everywhere; text is XML-escaped for platypus' paragraph markup.
"""
from __future__ import annotations

import io
from typing import Any
from xml.sax.saxutils import escape

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

__all__ = ["render_pdf"]

_INK = "#1b2631"
_ACCENT = "#1f4e79"
_OK = "#1e7b45"
_LINE = "#c8d0d8"


def _styles() -> dict[str, Any]:
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

    base = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=base["BodyText"], fontName="Helvetica", fontSize=9.5, leading=12.5,
                          textColor=colors.HexColor(_INK), spaceAfter=5)
    return {
        "title": ParagraphStyle("title", parent=base["Title"], fontName="Helvetica-Bold", fontSize=20,
                                textColor=colors.HexColor(_ACCENT), alignment=0, spaceAfter=2),
        "subtitle": ParagraphStyle("subtitle", parent=body, fontSize=11, textColor=colors.HexColor("#566573"),
                                   spaceAfter=10),
        "h2": ParagraphStyle("h2", parent=base["Heading2"], fontName="Helvetica-Bold", fontSize=13.5,
                             textColor=colors.HexColor(_ACCENT), spaceBefore=14, spaceAfter=6, keepWithNext=1),
        "h3": ParagraphStyle("h3", parent=base["Heading3"], fontName="Helvetica-Bold", fontSize=11,
                             spaceBefore=8, spaceAfter=4, keepWithNext=1),
        "body": body,
        "note": ParagraphStyle("note", parent=body, backColor=colors.HexColor("#fff8ec"),
                               borderColor=colors.HexColor("#9a5b00"), borderWidth=0.5, borderPadding=5,
                               spaceBefore=4, spaceAfter=9),
        "cell": ParagraphStyle("cell", parent=body, fontSize=8, leading=10, spaceAfter=0),
        "head": ParagraphStyle("head", parent=body, fontName="Helvetica-Bold", fontSize=8, leading=10,
                               spaceAfter=0),
        "caption": ParagraphStyle("caption", parent=body, fontSize=8, textColor=colors.HexColor("#566573")),
        "verdict": ParagraphStyle("verdict", parent=body, fontName="Helvetica-Bold", fontSize=15, leading=18,
                                  textColor=colors.HexColor(_OK), spaceAfter=6),
        "footer": ParagraphStyle("footer", parent=body, fontSize=7.5, leading=9.5,
                                 textColor=colors.HexColor("#566573")),
    }


def _markup(content: Inline) -> str:
    out = []
    for run in content:
        text = escape(run.text)
        if run.code:
            text = f'<font face="Courier">{text}</font>'
        if run.bold:
            text = f"<b>{text}</b>"
        out.append(text)
    return "".join(out)


def _table(table: Table, styles: dict[str, Any], width: float) -> list[Any]:
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph as P
    from reportlab.platypus import Table as T
    from reportlab.platypus import TableStyle

    count = len(table.header)
    weights = table.widths or tuple(1.0 for _ in range(count))
    widths = [width * w / sum(weights) for w in weights]
    data = [[P(escape(h), styles["head"]) for h in table.header]]
    data += [[P(_markup(cell), styles["cell"]) for cell in row] for row in table.rows]
    flowable = T(data, colWidths=widths, repeatRows=1)
    flowable.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.5, colors.HexColor(_LINE)),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef4")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#fafbfc")]),
        ("LEFTPADDING", (0, 0), (-1, -1), 4), ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]))
    out: list[Any] = [flowable]
    if table.caption:
        out.append(P(escape(table.caption), styles["caption"]))
    return out


def _block(block: Block, styles: dict[str, Any], width: float) -> list[Any]:
    from reportlab.platypus import Image, KeepTogether, ListFlowable, ListItem, Spacer
    from reportlab.platypus import Paragraph as P

    if isinstance(block, Subheading):
        return [P(escape(block.text), styles["h3"])]
    if isinstance(block, Paragraph):
        return [P(_markup(block.content), styles["note" if block.note else "body"])]
    if isinstance(block, BulletList):
        items = [ListItem(P(_markup(item), styles["body"]), leftIndent=12) for item in block.items]
        return [ListFlowable(items, bulletType="bullet", start="•", leftIndent=12)]
    if isinstance(block, Table):
        return [*_table(block, styles, width), Spacer(1, 6)]
    if isinstance(block, Figure):
        image = Image(io.BytesIO(block.png))
        scale = min(1.0, width * 0.9 / image.imageWidth)
        image.drawWidth, image.drawHeight = image.imageWidth * scale, image.imageHeight * scale
        return [KeepTogether([image, P(escape(block.caption), styles["caption"])])]
    raise TypeError(f"unknown block {type(block).__name__}")


def _summary(summary: Summary, styles: dict[str, Any], width: float) -> list[Any]:
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph as P
    from reportlab.platypus import Table as T
    from reportlab.platypus import TableStyle

    rows = [[P(f"<b>{escape(k)}</b>", styles["cell"]), P(escape(v), styles["cell"])] for k, v in summary.items]
    inner = T(rows, colWidths=[width * 0.26 - 12, width * 0.74 - 12])
    inner.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("TOPPADDING", (0, 0), (-1, -1), 1),
                               ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    box = T([[P(escape(summary.verdict), styles["verdict"])], [inner]], colWidths=[width])
    box.setStyle(TableStyle([
        ("BOX", (0, 0), (-1, -1), 1.5, colors.HexColor(_OK)),
        ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#f3faf6")),
        ("LEFTPADDING", (0, 0), (-1, -1), 10), ("RIGHTPADDING", (0, 0), (-1, -1), 10),
        ("TOPPADDING", (0, 0), (0, 0), 8), ("BOTTOMPADDING", (0, -1), (-1, -1), 8),
    ]))
    return [box]


def _section(section: Section, styles: dict[str, Any], width: float) -> list[Any]:
    from reportlab.platypus import Paragraph as P

    out: list[Any] = [P(escape(section.title), styles["h2"])]
    for block in section.blocks:
        out.extend(_block(block, styles, width))
    return out


def render_pdf(document: Document) -> bytes:
    """The document as PDF bytes (A4, numbered pages)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph as P
    from reportlab.platypus import SimpleDocTemplate, Spacer

    styles = _styles()
    out = io.BytesIO()
    page = SimpleDocTemplate(out, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=18 * mm,
                             bottomMargin=18 * mm, title=f"{document.title}: {document.subtitle}",
                             author="hermetic report", subject=document.subtitle, invariant=1)
    width = page.width

    def decorate(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(colors.HexColor("#566573"))
        canvas.drawString(18 * mm, 10 * mm, f"{document.title}: {document.subtitle}")
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    story: list[Any] = [P(escape(document.title), styles["title"]), P(escape(document.subtitle), styles["subtitle"])]
    story += _summary(document.summary, styles, width)
    story.append(Spacer(1, 6))
    for section in document.sections:
        story += _section(section, styles, width)
    story += [Spacer(1, 12), P(escape(document.footer), styles["footer"])]
    page.build(story, onFirstPage=decorate, onLaterPages=decorate)
    return out.getvalue()
