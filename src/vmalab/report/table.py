"""Tables that fit the terminal, as plain text (for mail and commit messages) or rich.

A :class:`Table` is headings plus rows of strings. :meth:`Table.to_text` lays it out in
plain columns separated by two spaces, with an ASCII rule under the headings and no box
characters. When the columns do not fit ``width``, the table is printed in several blocks
of columns one below the other, each repeating the first (label) column; a cell is never
cut. :meth:`Table.to_rich` gives a :class:`rich.table.Table` whose columns fold long
cells onto several lines instead of ending them in an ellipsis.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any


def term_width(stream: Any = None) -> int:
    """Columns to fit: ``$COLUMNS``, else the terminal's width, else 80 (piped output)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    stream = stream or sys.stdout
    try:
        if stream.isatty():
            return shutil.get_terminal_size((80, 24)).columns
    except (AttributeError, ValueError, OSError):
        pass
    return 80


@dataclass
class Table:
    """A title, column headings (``\\n`` splits a heading over lines) and string rows.

    ``right`` holds the indexes of right-aligned (numeric) columns.
    """

    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    title: str = ""
    right: set[int] = field(default_factory=set)

    def add_row(self, *cells: str) -> None:
        """Append one row (as many cells as columns)."""
        self.rows.append(list(cells))

    def width(self) -> int:
        """The text layout's width in one block."""
        return sum(self._widths()) + 2 * (len(self.columns) - 1)

    def _widths(self) -> list[int]:
        """Each column's width: its longest heading line or cell."""
        out = []
        for i, h in enumerate(self.columns):
            w = max((len(x) for x in h.split("\n")), default=0)
            for r in self.rows:
                w = max(w, len(r[i]))
            out.append(w)
        return out

    def _blocks(self, width: int) -> list[list[int]]:
        """Column indexes per block so that each block fits ``width`` (if it can)."""
        ws = self._widths()
        if not ws:
            return []
        blocks: list[list[int]] = []
        cur = [0]
        used = ws[0]
        for i in range(1, len(ws)):
            if used + 2 + ws[i] > width and len(cur) > 1:
                blocks.append(cur)
                cur = [0]
                used = ws[0]
            cur.append(i)
            used += 2 + ws[i]
        blocks.append(cur)
        return blocks

    def to_text(self, width: int = 80) -> str:
        """Plain columns, no box characters, in blocks no wider than ``width``."""
        ws = self._widths()
        out: list[str] = []
        if self.title:
            import textwrap

            out += textwrap.wrap(
                self.title,
                width=width,
                subsequent_indent="  ",
                break_long_words=False,
                break_on_hyphens=False,
            ) or [""]
        for bi, block in enumerate(self._blocks(width)):
            if bi or self.title:
                out.append("")
            heads = [self.columns[i].split("\n") for i in block]
            depth = max(len(h) for h in heads)
            for d in range(depth):
                cells = []
                for i, h in zip(block, heads, strict=True):
                    # headings sit on the bottom lines, aligned like their column
                    k = d - (depth - len(h))
                    text = h[k] if k >= 0 else ""
                    cells.append(text.rjust(ws[i]) if i in self.right else text.ljust(ws[i]))
                out.append("  ".join(cells).rstrip())
            out.append("  ".join("-" * ws[i] for i in block))
            for r in self.rows:
                out.append(
                    "  ".join(
                        r[i].rjust(ws[i]) if i in self.right else r[i].ljust(ws[i]) for i in block
                    ).rstrip()
                )
        return "\n".join(out) + "\n"

    def to_rich(self) -> Any:
        """A rich Table whose cells fold instead of being cut."""
        from rich.table import Table as RichTable

        t = RichTable(title=self.title or None)
        for i, h in enumerate(self.columns):
            t.add_column(
                h,
                justify="right" if i in self.right else "left",
                overflow="fold",
                no_wrap=False,
                style="bold" if i == 0 else None,
            )
        for r in self.rows:
            t.add_row(*r)
        return t

    def to_json(self) -> dict[str, Any]:
        """Headings and rows as plain data."""
        return {
            "title": self.title,
            "columns": [_one_line(c) for c in self.columns],
            "rows": self.rows,
        }


def transpose(t: Table, corner: str = "") -> Table:
    """The same table with rows and columns swapped (first column becomes the headings)."""
    out = Table(
        [corner] + [r[0] for r in t.rows], title=t.title, right=set(range(1, len(t.rows) + 1))
    )
    for i in range(1, len(t.columns)):
        out.add_row(_one_line(t.columns[i]), *[r[i] for r in t.rows])
    return out


def _one_line(heading: str) -> str:
    """A multi-line heading on one line (``retract-\nable`` becomes ``retractable``)."""
    out = ""
    for part in heading.split("\n"):
        part = part.strip()
        if out and not out.endswith("-"):
            out += " "
        elif out.endswith("-"):
            out = out[:-1]
        out += part
    return out


def emit(tables: list[Table | str], fmt: str, *, width: int | None = None) -> None:
    """Print tables (and plain lines between them) as ``text`` or ``rich``."""
    import click

    width = width or term_width()
    if fmt == "rich":
        from rich.console import Console

        con = Console(width=width if not sys.stdout.isatty() else None, highlight=False)
        for t in tables:
            if isinstance(t, Table):
                con.print(t.to_rich())
            else:
                con.print(wrap(t, con.width), markup=False, soft_wrap=True)
        return
    for i, t in enumerate(tables):
        if isinstance(t, Table):
            if i:
                click.echo("")
            click.echo(t.to_text(width), nl=False)
        else:
            click.echo(wrap(t, width))


def wrap(text: str, width: int) -> str:
    """Lines longer than ``width`` wrapped at spaces, continuation lines indented two more
    than the line they continue (a word longer than the width stays whole)."""
    import textwrap

    out = []
    for ln in text.splitlines() or [""]:
        if len(ln) <= width:
            out.append(ln)
            continue
        indent = " " * (len(ln) - len(ln.lstrip()) + 2)
        out.append(
            textwrap.fill(
                ln,
                width=width,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(out)
