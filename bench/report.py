"""The bench report: ``results.json`` (versioned schema), ``report.md`` and a self-contained
``report.html`` (:mod:`.report_html`), the same tables (:mod:`.report_tables`, the headline
:mod:`.report_headline`) in both, each figure beside an earlier run's when a baseline is given
(:mod:`.baseline`). Files are written to a temporary folder and renamed into place."""
from __future__ import annotations

import json
from pathlib import Path

from lsnn.reference.files import write_folder

from .baseline import DEFINITION as REGRESSION, Comparison
from .report_headline import headline
from .report_html import page
from .report_plots import plots
from .report_tables import Cell, Table, definitions, tables


def compare(results: dict, path: str | Path, old: dict) -> Comparison:
    """The figures of ``results`` against those of the baseline results ``old`` (read from ``path``)."""
    return Comparison(path, old, headline(results) + tables(results), headline(old) + tables(old))


def _definitions(results: dict, comparison: Comparison | None) -> dict[str, str]:
    defs = definitions(results)
    if comparison is not None:
        defs["regression"] = ": " + REGRESSION
    return defs


def _md_cell(t: Table, row: list[Cell], column: str, cell: Cell, comparison: Comparison | None) -> str:
    change = comparison.of(t, row, column) if comparison else None
    if change is None:
        return cell.text
    return f"{'⚠ ' if change.regression else ''}{cell.text} ({change.note()})"


def md_table(t: Table, comparison: Comparison | None = None) -> list[str]:
    return ["", f"## {t.title}", "", t.note, "", "| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns),
            *("| " + " | ".join(_md_cell(t, row, col, cell, comparison) for col, cell in zip(t.columns, row)) + " |"
              for row in t.rows)]


def _md_header(results: dict) -> list[str]:
    env, cfg = results["environment"], results["config"]
    return ["# lsnn bench report", "",
            f"lsnn {env.get('lsnn') or '-'} at commit {env.get('git_commit') or '-'}, schema `{results['schema']}`. "
            f"{env['cpu']} ({env.get('machine', '-')}), {env['cores']} cores, timed at "
            f"{' and '.join(map(str, cfg['threads']))} thread(s) (summary: {cfg['threads'][0]}); "
            f"torch {env['torch']}, onnxruntime {env['onnxruntime']}, TVM {env['tvm']}; {env['time']}."]


def markdown(results: dict, comparison: Comparison | None = None) -> str:
    heads, body = headline(results), tables(results)
    out = _md_header(results)
    for t in heads:
        out += md_table(t, comparison)
    if comparison is not None:
        out += md_table(comparison.summary({t.id: t.title for t in heads + body}))
    for t in body:
        out += md_table(t, comparison)
    if results["unavailable"]:
        out += ["", "## Not run here", ""]
        out += [f"- {u.get('runtime') or u.get('model')}: {u['reason']}" for u in results["unavailable"]]
    out += ["", "## Definitions", "", *(f"* {k}{d}" for k, d in _definitions(results, comparison).items()), ""]
    return "\n".join(out)


def html_report(results: dict, comparison: Comparison | None = None) -> str:
    return page(results, headline(results), tables(results), plots(results), _definitions(results, comparison),
                comparison)


def write(results: dict, out: Path, baseline: tuple[Path, dict] | None = None) -> Path:
    """``results.json``, ``report.md`` and ``report.html`` in the folder ``out``, swapped in whole;
    an existing folder is replaced only if lsnn wrote it (:func:`lsnn.reference.files.write_folder`).
    ``baseline``: (path, results) of an earlier run (:func:`lsnn.bench.baseline.load`) that every
    figure is shown beside."""
    comparison = compare(results, *baseline) if baseline else None

    def fill(tmp: Path) -> None:
        (tmp / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (tmp / "report.md").write_text(markdown(results, comparison))
        (tmp / "report.html").write_text(html_report(results, comparison))

    write_folder(out, fill, "bench report")
    return Path(out)
