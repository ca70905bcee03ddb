"""Tables for people: aligned plain text or Markdown, from rows of strings."""

from __future__ import annotations

from collections.abc import Sequence


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False,
                 text_cols: int = 1) -> str:
    """Plain text (aligned columns) or a Markdown table; the first ``text_cols`` columns are
    left-aligned, the others (numbers) right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def cell(s: str, i: int) -> str:
        return s.ljust(widths[i]) if i < text_cols else s.rjust(widths[i])

    if markdown:
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join("---" if i < text_cols else "---:"
                                for i in range(len(headers))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    lines = ["  ".join(cell(h, i) for i, h in enumerate(headers)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell(c, i) for i, c in enumerate(r)).rstrip() for r in rows]
    return "\n".join(lines)
