"""The report page as HTML or Markdown: the same calls (heading, para, note, code, table,
image) render either a self-contained HTML file (CSS inline, images as ``data:`` URIs) or
Markdown with its PNGs in ``report_files/`` next to it.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from morse.io import atomic_write_bytes

__all__ = ["HtmlPage", "MarkdownPage", "Page"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.mean td { font-weight: bold; background: #f2f2f2; }
.note { color: #8a5a00; font-style: italic; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
img { max-width: 100%; }
"""


class Page:
    """Collects a page section by section; subclasses render HTML or Markdown."""

    def __init__(self, out_path: Path):
        self.out_path = out_path
        self.parts: list[str] = []
        self.n_images = 0

    def heading(self, text: str, level: int = 2) -> None:
        raise NotImplementedError

    def para(self, text: str) -> None:
        raise NotImplementedError

    def note(self, text: str) -> None:
        raise NotImplementedError

    def code(self, text: str, summary: str) -> None:
        raise NotImplementedError

    def table(
        self,
        columns: list[str],
        rows: list[list[str]],
        groups: list[tuple[str, int]] | None = None,
        mean_rows: int = 0,
        summary: str | None = None,
    ) -> None:
        """``groups``: (name, n_columns) spans over ``columns[1:]``; the last ``mean_rows``
        rows are emphasised; ``summary``: title of a collapsible table."""
        raise NotImplementedError

    def image(self, png: bytes, name: str, alt: str) -> None:
        raise NotImplementedError

    def finish(self, title: str) -> str:
        raise NotImplementedError


class HtmlPage(Page):
    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def code(self, text: str, summary: str) -> None:
        self.parts.append(
            f"<details><summary>{html.escape(summary)}</summary>"
            f"<pre>{html.escape(text)}</pre></details>"
        )

    def table(
        self,
        columns: list[str],
        rows: list[list[str]],
        groups=None,
        mean_rows: int = 0,
        summary: str | None = None,
    ) -> None:
        head = ""
        if groups:
            head += (
                "<tr><th></th>"
                + "".join(f'<th colspan="{n}">{html.escape(g)}</th>' for g, n in groups)
                + "</tr>"
            )
        head += "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"
        body = "".join(
            ('<tr class="mean">' if i >= len(rows) - mean_rows else "<tr>")
            + "".join(f"<td>{html.escape(v)}</td>" for v in row)
            + "</tr>"
            for i, row in enumerate(rows)
        )
        table = f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"
        if summary:
            table = f"<details><summary>{html.escape(summary)}</summary>{table}</details>"
        self.parts.append(table)

    def image(self, png: bytes, name: str, alt: str) -> None:
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
        self.n_images += 1

    def finish(self, title: str) -> str:
        return (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n" + "\n".join(self.parts) + "\n</body></html>\n"
        )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class MarkdownPage(Page):
    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append("#" * level + " " + text)

    def para(self, text: str) -> None:
        self.parts.append(text)

    def note(self, text: str) -> None:
        self.parts.append(f"> *{text}*")

    def code(self, text: str, summary: str) -> None:
        fence = "````" if "```" in text else "```"
        self.parts.append(
            f"<details><summary>{summary}</summary>\n\n{fence}yaml\n"
            f"{text.rstrip()}\n{fence}\n\n</details>"
        )

    def table(
        self,
        columns: list[str],
        rows: list[list[str]],
        groups=None,
        mean_rows: int = 0,
        summary: str | None = None,
    ) -> None:
        if groups:
            prefixes = [g for g, n in groups for _ in range(n)]
            columns = [columns[0]] + [
                f"{p} {c}" for p, c in zip(prefixes, columns[1:], strict=True)
            ]
        lines = [
            "| " + " | ".join(_md_cell(c) for c in columns) + " |",
            "|" + "|".join([":---"] + ["---:"] * (len(columns) - 1)) + "|",
        ]
        for i, row in enumerate(rows):
            cells = [_md_cell(v) for v in row]
            if i >= len(rows) - mean_rows:
                cells = [f"**{c}**" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        if summary:
            self.parts.append(f"*{summary}*")
        self.parts.append("\n".join(lines))

    def image(self, png: bytes, name: str, alt: str) -> None:
        rel = Path("report_files") / name
        atomic_write_bytes(self.out_path.parent / rel, png)
        self.parts.append(f"![{alt}]({rel.as_posix()})")
        self.n_images += 1

    def finish(self, title: str) -> str:
        return f"# {title}\n\n" + "\n\n".join(self.parts) + "\n"
