"""``report.html``: one self-contained file (plots inlined as PNGs, styles and a few lines of script
inline): a header naming the run, the headline per task, the changes since a baseline, the plots, then
every table as an HTML table (sortable by a click on a column) with the definitions it follows."""
from __future__ import annotations

import html
import re

from .baseline import Comparison
from .report_tables import Cell, Table

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;padding:0 1em;color:#222}
header{border-bottom:2px solid #444;margin-bottom:1em}
header dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;font-size:.9em}
header dt{font-weight:600} header dd{margin:0}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right;vertical-align:top}
th{background:#eee;cursor:pointer;position:sticky;top:0} td:not([data-v]),th:first-child{text-align:left}
.headline p.found{font-size:1.05em;background:#f4f8ff;border-left:4px solid #36c;padding:.4em .8em}
.was{display:block;color:#777;font-size:.85em} td.regression{background:#fde0dc}
td.regression .was{color:#a00;font-weight:600}
figure{display:inline-block;margin:.5em} figure img{max-width:100%}
.defs{font-size:.8em;color:#444} .defs dt{font-weight:600} summary{font-size:.8em;color:#555;cursor:pointer}
"""

#: click a column's heading to sort its table by it (numbers by their value, the rest as text)
SCRIPT = """
document.querySelectorAll("table").forEach(t => t.querySelectorAll("th").forEach((th, i) =>
  th.addEventListener("click", () => {
    const body = t.tBodies[0], dir = th.dataset.dir = th.dataset.dir === "1" ? "-1" : "1";
    const key = r => r.cells[i].dataset.v !== undefined ? parseFloat(r.cells[i].dataset.v) : r.cells[i].textContent;
    [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
      return dir * (typeof x === "number" && typeof y === "number" ? x - y
                    : String(x).localeCompare(String(y), undefined, {numeric: true})); })
      .forEach(r => body.appendChild(r));
  })));
"""

e = html.escape


def _rich(text: str) -> str:
    """Escaped text with ``code`` spans."""
    return re.sub(r"(?::\w+:`([^`]+)`|``(.+?)``)", lambda m: f"<code>{m.group(1) or m.group(2)}</code>", e(text))


def header(results: dict) -> str:
    env, cfg = results["environment"], results["config"]
    facts = [("suite", f"lsnn {env.get('lsnn') or '-'}, results schema {results['schema']}"),
             ("git commit", env.get("git_commit") or "-"),
             ("machine", f"{env.get('machine', '-')}, {env['cores']} cores" + (", CUDA GPU" if env.get("gpu") else "")),
             ("CPU", env["cpu"]),
             ("threads", f"{' and '.join(map(str, cfg['threads']))} (headline and summary: {cfg['threads'][0]})"),
             ("date", env["time"]),
             ("software", f"torch {env['torch']}, onnxruntime {env['onnxruntime']}, TVM {env['tvm']}, "
                          f"Python {env.get('python', '-')}")]
    rows = "".join(f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in facts)
    return f'<header id="run"><h1>lsnn bench report</h1><dl>{rows}</dl></header>'


def _cell(t: Table, row: list[Cell], column: str, cell: Cell, comparison: Comparison | None) -> str:
    change = comparison.of(t, row, column) if comparison else None
    attrs = "" if cell.value is None else f' data-v="{cell.value!r}"'
    if change is None:
        return f"<td{attrs}>{e(cell.text)}</td>"
    cls = ' class="regression"' if change.regression else ""
    mark = "&#9888; " if change.regression else ""
    return f'<td{attrs}{cls}>{mark}{e(cell.text)}<span class="was">{e(change.note())}</span></td>'


def table(t: Table, defs: dict[str, str], comparison: Comparison | None = None, cls: str = "") -> str:
    head = "".join(f"<th>{e(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(_cell(t, row, col, cell, comparison) for col, cell in zip(t.columns, row))
                   + "</tr>" for row in t.rows)
    terms = "".join(f"<dt>{e(k)}</dt><dd>{_rich(defs[k].lstrip(': '))}</dd>" for k in t.defines if k in defs)
    note = f'<p class="found">{e(t.note)}</p>' if cls == "headline" else f"<p>{e(t.note)}</p>"
    return (f'<section id="{e(t.id)}" class="{cls or "table"}"><h2>{e(t.title)}</h2>{note}'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f'<details><summary>Definitions: {e(", ".join(k for k in t.defines if k in defs))}</summary>'
            f'<dl class="defs">{terms}</dl></details></section>')


def figures(plots: list[tuple[str, str, str]]) -> str:
    return "".join(f'<figure id="{e(pid)}"><h3>{e(heading)}</h3><img alt="{e(heading)}" '
                   f'src="data:image/png;base64,{png}"></figure>' for pid, heading, png in plots)


def page(results: dict, headline: list[Table], tables: list[Table], plots, defs: dict[str, str],
         comparison: Comparison | None) -> str:
    parts = [header(results)]
    parts += [table(t, defs, comparison, "headline") for t in headline]
    if comparison is not None:
        parts.append(table(comparison.summary({t.id: t.title for t in headline + tables}), defs, None, "baseline"))
    parts.append(f'<section id="plots"><h2>Plots</h2>{figures(plots)}</section>')
    parts += [table(t, defs, comparison) for t in tables]
    if results["unavailable"]:
        items = "".join(f"<li>{e(str(u.get('runtime') or u.get('model')))}: {e(u['reason'])}</li>"
                        for u in results["unavailable"])
        parts.append(f'<section id="unavailable"><h2>Not run here</h2><ul>{items}</ul></section>')
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>lsnn bench report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}<script>{SCRIPT}</script></body></html>")
