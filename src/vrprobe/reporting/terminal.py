"""Terminal output that fits: every printed line within the output's width, every name in full (never cut with an
ellipsis, never broken inside). Layout only: the cells' text comes from `vrprobe.reporting.tables`.

`output_width(stream)` the terminal's width, else `COLUMNS` (output piped), else `DEFAULT_WIDTH`;
`pack(console, columns, rows, width)` columns in groups that each fit as one table beside the name columns;
`block_lines(columns, rows, width)` one block per row, the fallback when a column cannot fit beside the names;
`print_table(...)` a titled table by either route; `print_study(table, heads, all_columns)` what `vrprobe study` and
`vrprobe show` print; `print_summary(summary)` a run without a table, one `key: value` line per scalar.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from vrprobe.reporting.tables import (
    GLUE,
    GROUNDING_COLUMNS,
    GROUNDING_TITLE,
    KEY_COLUMNS,
    MORE_COLUMNS,
    POINTING_COLUMN,
    RELIABILITY_COLUMNS,
    RELIABILITY_TITLE,
    STUDY_TITLE,
    Column,
    shown,
    verdict_lines,
    wrap,
)

#: the width when the output is neither a terminal nor given a width in `COLUMNS`
DEFAULT_WIDTH = 100
#: the name columns (model, data) repeated at the left of every table a wide table is split into
NAME_COLUMNS = 2


def output_width(stream: TextIO | None = None) -> int:
    """Columns available to `stream` (default stdout): a terminal's own width; when piped, `COLUMNS` if it holds a
    positive integer; else `DEFAULT_WIDTH`."""
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            columns = os.get_terminal_size(stream.fileno()).columns
            if columns > 0:
                return columns
    except (AttributeError, OSError, ValueError):  # a stream without a file descriptor, or not a terminal after all
        pass
    value = os.environ.get("COLUMNS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_WIDTH


def make_console(width: int) -> Console:
    """A rich console of `width` columns on stdout (resolved when printing, so redirections are followed), no markup."""
    return Console(width=width, highlight=False, markup=False, emoji=False)


def _table(columns: Sequence[Column], cells: Sequence[Sequence[str]]) -> Table:
    """A light table (a rule under the header, no frame) of `cells[row][column]`; no cell or header ever wraps."""
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c.header, justify="left" if c.left else "right", no_wrap=True)
    for row in cells:
        t.add_row(*(Text(text) for text in row))
    return t


def _cells(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [[c.cell(row) for c in columns] for row in rows]


def table_width(console: Console, columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> int:
    """The width `columns` take as one unwrapped table, as rich measures it."""
    options = console.options.update_width(1 << 20)
    return Measurement.get(console, options, _table(columns, _cells(columns, rows))).maximum


def pack(
    console: Console, columns: Sequence[Column], rows: Sequence[dict[str, Any]], width: int, key: int = NAME_COLUMNS
) -> list[list[Column]] | None:
    """`columns` in order, in as few groups as fit: each group is the first `key` columns and then as many of the
    others as fit in `width`. None when the name columns, or one other column beside them, do not fit."""
    names, rest = list(columns[:key]), list(columns[key:])

    def fits(cols: list[Column]) -> bool:
        return table_width(console, cols, rows) <= width

    if not fits(names):
        return None
    groups: list[list[Column]] = []
    current: list[Column] = []
    for col in rest:
        if fits(names + current + [col]):
            current.append(col)
        elif current and fits(names + [col]):
            groups.append(current)
            current = [col]
        else:
            return None
    groups.append(current)
    return [names + g for g in groups]


def block_lines(
    columns: Sequence[Column], rows: Sequence[dict[str, Any]], width: int, key: int = NAME_COLUMNS
) -> list[str]:
    """One block per row: its names joined by ' · ', then '  header: value' per other column, each line within
    `width` (wrapped at spaces only; a single name longer than `width` stays whole)."""
    out: list[str] = []
    for row in rows:
        out += wrap(" · ".join(c.cell(row) for c in columns[:key]), width)
        for c in columns[key:]:
            out += wrap(f"{c.header}: {c.cell(row).replace(' ', GLUE)}", width, indent="  ", more="    ")
    return out


def print_lines(console: Console, lines: Sequence[str]) -> None:
    """Lines as they are (already within the width): rich neither wraps nor styles them."""
    for line in lines:
        console.print(Text(line), soft_wrap=True)


def print_table(
    console: Console, title: str, columns: Sequence[Column], rows: Sequence[dict[str, Any]], width: int
) -> None:
    """The title (wrapped), then the columns as one table or several narrower ones (the names repeated in each), or
    as one block per row when even that does not fit."""
    print_lines(console, wrap(title, width))
    groups = pack(console, columns, rows, width)
    if groups is None:
        print_lines(console, block_lines(columns, rows, width))
        return
    for i, group in enumerate(groups):
        if i:
            console.print()
        console.print(_table(group, _cells(group, rows)))


def print_study(
    table: Sequence[dict[str, Any]],
    heads: Mapping[str, Sequence[dict[str, Any]]] | None = None,
    all_columns: bool = False,
    width: int | None = None,
) -> None:
    """A study's table, its key columns only (and pointing accuracy where the rows have it and it fits in the same
    table) unless `all_columns` (then every column, the reliability signals and the grounded numbers in a table of
    their own; a column needing a key no row holds is left out), then the verdict; `heads`:
    summary.json's per-head cells, for the verdict's top heads."""
    width = output_width() if width is None else width
    console = make_console(width)
    columns = shown(KEY_COLUMNS + (MORE_COLUMNS if all_columns else (POINTING_COLUMN,)), table)
    if not all_columns and POINTING_COLUMN in columns and len(pack(console, columns, table, width) or ()) != 1:
        columns.remove(POINTING_COLUMN)  # the default view adds it only where the key columns stay one table
    print_table(console, STUDY_TITLE, columns, table, width)
    if all_columns and all("auroc_confidence" in row for row in table):
        console.print()
        print_table(console, RELIABILITY_TITLE, KEY_COLUMNS[:NAME_COLUMNS] + RELIABILITY_COLUMNS, table, width)
    grounded = shown(GROUNDING_COLUMNS, table)
    if all_columns and grounded:
        console.print()
        print_table(console, GROUNDING_TITLE, KEY_COLUMNS[:NAME_COLUMNS] + tuple(grounded), table, width)
    console.print()
    print_lines(console, verdict_lines(table, width, heads))


def print_summary(summary: dict[str, Any], width: int | None = None) -> None:
    """A run without a table: one 'key: value' line per scalar entry, wrapped at spaces within the width."""
    width = output_width() if width is None else width
    lines = []
    for k, v in summary.items():
        if not isinstance(v, (dict, list)):
            lines += wrap(f"{k}: {v}", width, more="    ")
    print_lines(make_console(width), lines)


def echo(text: str, more: str = "      ") -> None:
    """One line of a command's report on stdout, wrapped at spaces within `output_width()` (`more` indents the
    continuation lines; a leading indent in `text` is kept)."""
    for line in wrap(text, output_width(), more=more):
        print(line)
