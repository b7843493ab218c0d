"""The report as a list of sections (text, tables, figures) and its two renderings: one self-contained
report.html (figures embedded as base64 PNG, no external resources, opens offline in any browser) and
report.md with the figures beside it in figures/<name>.png."""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bsstudy.runfolder import replace_atomically, write_table

NUMERIC = re.compile(r"^[-+0-9.e–]+( \[[-+0-9.e]+, [-+0-9.e]+\])?$")
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
.table-scroll { overflow-x: auto; max-width: 100%; margin: 0.8em 0; }
table { border-collapse: collapse; margin: 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; white-space: nowrap; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .caption { font-size: 0.85em; color: #555; max-width: 60em; }
.verdict-supported { background: #e3f4e3; } .verdict-not-supported { background: #fbe4e4; }
.verdict-not-measured { color: #777; }
.verdict-too-few-seeds, .verdict-inconclusive, .verdict-not-comparable,
.verdict-not-measurable-with-this-protocol { background: #fdf3d8; }
"""


@dataclass
class Figure:
    name: str  # file name stem, unique in the report
    caption: str
    png: bytes


@dataclass
class Table:
    name: str  # file name stem of tables/<name>.csv
    caption: str
    frame: pd.DataFrame  # numbers; format_table turns x_mean/x_ci_low/x_ci_high into "m [lo, hi]"


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def format_number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def format_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Strings for display: each x_mean, x_ci_low, x_ci_high triple becomes one column x = "m [lo, hi]"."""
    out = {}
    for column in frame.columns:
        if column.endswith(("_ci_low", "_ci_high")):
            continue
        values = frame[column].tolist()
        if column.endswith("_mean") and f"{column[:-5]}_ci_low" in frame:
            base = column[:-5]
            lows, highs = frame[f"{base}_ci_low"].tolist(), frame[f"{base}_ci_high"].tolist()
            out[base] = [
                format_number(m) + ("" if not math.isfinite(lo) else f" [{format_number(lo)}, {format_number(hi)}]")
                for m, lo, hi in zip(values, lows, highs, strict=True)
            ]
        else:
            out[column] = [format_number(v) for v in values]
    if "variant" in out and not any(out["variant"]):
        del out["variant"]  # nothing but batch size and seed varies in this sweep
    return pd.DataFrame(out, columns=list(out))


def anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def html_table(table: Table) -> str:
    frame = format_table(table.frame)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        verdict = row.get("verdict", "")
        css = f' class="verdict-{anchor(verdict.split(":")[0]).removesuffix("-in-this-sweep")}"' if verdict else ""
        cells = (f"<td{' class=num' if NUMERIC.match(str(v)) else ''}>{html.escape(str(v))}</td>" for v in row)
        rows.append(f"<tr{css}>" + "".join(cells) + "</tr>")
    caption = f'<p class="caption">{html.escape(table.caption)}</p>' if table.caption else ""
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'{caption}<div class="table-scroll">{table_html}</div>'  # a wide table scrolls, the page does not


def html_figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f'<figure id="fig-{figure.name}"><img alt="{html.escape(figure.name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
    )


def render_html(title: str, intro: list[str], sections: list[Section]) -> str:
    toc = "".join(f'<li><a href="#{anchor(s.title)}">{html.escape(s.title)}</a></li>' for s in sections)
    body = [f"<h1>{html.escape(title)}</h1>", *(f"<p>{html.escape(p)}</p>" for p in intro), f"<ul>{toc}</ul>"]
    for section in sections:
        body.append(f'<h2 id="{anchor(section.title)}">{html.escape(section.title)}</h2>')
        body += [f"<p>{html.escape(p)}</p>" for p in section.text]
        body += [html_table(t) for t in section.tables]
        body += [html_figure(f) for f in section.figures]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def markdown_table(table: Table) -> str:
    frame = format_table(table.frame)
    cells = [[str(v).replace("|", "\\|").replace("\n", " ") for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return (f"{table.caption}\n\n" if table.caption else "") + "\n".join(lines)


def render_markdown(title: str, intro: list[str], sections: list[Section]) -> str:
    parts = [f"# {title}", *intro]
    for section in sections:
        parts.append(f"## {section.title}")
        parts += section.text
        parts += [markdown_table(t) for t in section.tables]
        parts += [f"![{f.name}](figures/{f.name}.png)\n\n*{f.caption}*" for f in section.figures]
    return "\n\n".join(parts) + "\n"


def write_documents(out_dir: Path, title: str, intro: list[str], sections: list[Section]) -> None:
    """report.html, report.md, figures/<name>.png and tables/<name>.csv under out_dir, each file atomically
    (build.py writes them into the staging folder of runfolder.written_whole: the report is whole or not there)."""
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    for section in sections:
        for figure in section.figures:
            replace_atomically(out_dir / "figures" / f"{figure.name}.png", lambda tmp, f=figure: tmp.write_bytes(f.png))
        for table in section.tables:
            write_table(out_dir / "tables" / f"{table.name}.csv", table.frame)
    html_text, markdown = render_html(title, intro, sections), render_markdown(title, intro, sections)
    replace_atomically(out_dir / "report.html", lambda tmp: tmp.write_text(html_text))
    replace_atomically(out_dir / "report.md", lambda tmp: tmp.write_text(markdown))
