"""A tiny document model: what the report says, apart from how HTML or PDF lays it out.

Both renderers (`parent.report.html`, `parent.report.pdf`) walk the same `Document`,
so the two files cannot say different things. Text is plain text everywhere; each
renderer escapes it for its own format. `Text` runs inside a paragraph may be marked
as code (hashes, commands) so long hex strings can wrap in both formats.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Block",
    "BulletList",
    "Document",
    "Figure",
    "Paragraph",
    "Section",
    "Subheading",
    "Summary",
    "Table",
    "Text",
    "runs",
]


@dataclass(frozen=True)
class Text:
    """A run of text; `code` for identifiers, hashes and commands (monospace, may break anywhere)."""

    text: str
    code: bool = False
    bold: bool = False


Inline = tuple[Text, ...]


def runs(*parts: str | Text) -> Inline:
    """Plain strings and `Text` runs as one inline sequence."""
    return tuple(p if isinstance(p, Text) else Text(p) for p in parts)


@dataclass(frozen=True)
class Paragraph:
    content: Inline
    note: bool = False  # a caveat, set apart


@dataclass(frozen=True)
class BulletList:
    items: tuple[Inline, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Inline, ...], ...]
    caption: str = ""
    widths: tuple[float, ...] = ()  # relative column widths; empty: equal


@dataclass(frozen=True)
class Subheading:
    text: str


@dataclass(frozen=True)
class Figure:
    png: bytes = field(repr=False)
    caption: str
    alt: str


Block = Subheading | Paragraph | BulletList | Table | Figure


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]
    anchor: str


@dataclass(frozen=True)
class Summary:
    """The box at the top: the verdict and the few numbers a reader needs first."""

    verdict: str
    items: tuple[tuple[str, str], ...]  # (label, value)


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str
    summary: Summary
    sections: tuple[Section, ...]
    footer: str
