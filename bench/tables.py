"""Printed figures: a median with its range, and columns aligned under a header row."""

import statistics


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def stats_of(values):
    """Median, min, max and count of `values` (what `figure` prints)."""
    return {**spread(values), "n": len(values)}


def figure(stats, fmt):
    if stats["n"] == 1:
        return fmt.format(stats["median"])
    return f"{fmt.format(stats['median'])} [{fmt.format(stats['min'])}–{fmt.format(stats['max'])}]"


def column_widths(tables):
    """The widths that fit every cell of every table (lists of rows of strings), column by column."""
    count = max((len(row) for table in tables for row in table), default=0)
    return [max((len(row[i]) for table in tables for row in table), default=0) for i in range(count)]


def aligned(table, widths):
    """The lines of `table`: the first column left, the others right, a rule under its header row."""
    lines = []
    for i, row in enumerate(table):
        lines.append("  ".join(cell.ljust(widths[j]) if j == 0 else cell.rjust(widths[j])
                               for j, cell in enumerate(row)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines
