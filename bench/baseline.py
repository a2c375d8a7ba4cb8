"""``lsnn bench --baseline OLD/results.json``: every figure of the report beside the same figure of an
earlier run, with its change; a change for the worse beyond the run-to-run noise is a regression.

The noise of a timing is measured from its repeats: the relative p10-p90 range of its median, the
wider of the two runs' (a timing of one repeat has no measured noise and is not judged). A latency
is a regression when its median grew by more than that. Counts that
the same model gives every run (accuracy on the same examples, instructions, bytes, synaptic
operations) have no noise: any change for the worse is a regression. A change below a figure's printed
precision is none. Figures measured once (peak
working memory) or derived from another (per step, throughput, ratios) show their change unjudged."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lsnn.reference.errors import LsnnError
from lsnn.reference.files import read_json

from .harness import SCHEMA
from .report_tables import HIGHER, LOWER, Cell, Table


class BaselineError(LsnnError):
    """A baseline results file lsnn bench cannot compare with (another schema, not a results file)."""


def load(path: str | Path) -> dict:
    """The results in ``path``, refused unless they are of this suite's schema."""
    path = Path(path)
    results = read_json(path, BaselineError, "baseline results")  # missing: MissingFileError naming it
    schema = results.get("schema") if isinstance(results, dict) else None
    if schema != SCHEMA:
        raise BaselineError(f"{path}: baseline results of schema {schema!r}; this lsnn bench writes and compares "
                            f"{SCHEMA!r}")
    for key in ("environment", "config", "models", "runs"):
        if key not in results:
            raise BaselineError(f"{path}: baseline results without '{key}' (not a complete lsnn bench results file)")
    return results


@dataclass(frozen=True)
class Change:
    """One figure now (``new``) and in the baseline (``old``)."""
    new: Cell
    old: Cell

    @property
    def relative(self) -> float | None:
        if self.new.value is None or self.old.value is None or self.old.value == 0:
            return None
        return self.new.value / self.old.value - 1

    @property
    def noise(self) -> float | None:
        """The wider relative noise of the two runs' figures, or None when either was not measured."""
        if self.new.noise is None or self.old.noise is None:
            return None
        return max(self.new.noise, self.old.noise)

    @property
    def visible(self) -> bool:
        """The figure reads differently (a change below its printed precision is none)."""
        return self.new.text != self.old.text

    @property
    def regression(self) -> bool:
        """Worse than the baseline by more than the noise (both runs' figures judged the same way)."""
        if not self.visible or self.noise is None or self.new.better is None or self.old.value is None:
            return False
        worse = {LOWER: self.new.value - self.old.value, HIGHER: self.old.value - self.new.value}[self.new.better]
        return worse > self.noise * abs(self.old.value)

    def note(self) -> str:
        """'was OLD, +x.x%' (or 'unchanged')."""
        if not self.visible:
            return "unchanged"
        rel = self.relative
        return f"was {self.old.text}" + ("" if rel is None else f", {rel:+.1%}")


class Comparison:
    """The report's tables now against the same tables built from the baseline's results: rows matched
    by their naming cells, columns by name."""

    def __init__(self, path: str | Path, baseline: dict, new: list[Table], old: list[Table]):
        self.path, self.baseline = Path(path), baseline
        self._changes: dict[tuple, Change] = {}  # by (table, row, column)
        self._measured: dict[tuple, tuple] = {}  # by measurement (one shown in several tables counts once)
        self.unmatched = 0
        old_by_id = {t.id: t for t in old}
        for t in new:
            self._match(t, old_by_id.get(t.id))

    def _match(self, t: Table, old: Table | None) -> None:
        rows = {old.row_key(r): dict(zip(old.columns, r)) for r in old.rows} if old else {}
        for row in t.rows:
            before = rows.get(t.row_key(row))
            for col, cell in list(zip(t.columns, row))[t.keys:]:
                was = before.get(col) if before else None
                if cell.value is None:
                    continue
                if was is None or was.value is None:
                    self.unmatched += 1
                    continue
                where = (t.id, t.row_key(row), col)
                self._changes[where] = Change(cell, was)
                self._measured.setdefault(cell.of or where, (where, self._changes[where]))

    def of(self, t: Table, row: list[Cell], column: str) -> Change | None:
        return self._changes.get((t.id, t.row_key(row), column))

    @property
    def compared(self) -> int:
        """Measurements compared (one shown in several tables counted once)."""
        return len(self._measured)

    def regressions(self) -> list[tuple[tuple, Change]]:
        """((table, row, column), change) of every measurement that regressed, where it is first shown."""
        return [(k, c) for k, c in self._measured.values() if c.regression]

    def changed(self) -> int:
        return sum(c.visible for _, c in self._measured.values())

    def summary(self, titles: dict[str, str]) -> Table:
        """The regressions as a table: where, the old and new figure, the change, the noise allowed."""
        env = self.baseline["environment"]
        t = Table("regressions", "Changes since the baseline",
                  f"Baseline {self.path} (commit {env.get('git_commit') or '-'}, {env.get('time', '-')}): "
                  f"{self.compared} measurements compared, {self.changed()} changed, {len(self.regressions())} "
                  f"regression(s) beyond the run-to-run noise (listed where first shown); {self.unmatched} figure(s) without a "
                  "counterpart in the baseline. Every figure of the tables below is shown beside its baseline "
                  "value.", ["table", "row", "figure", "baseline", "now", "change", "noise allowed"], keys=3,
                  defines=("regression",))
        for (tid, row, col), c in self.regressions():
            rel = c.relative
            t.rows.append([Cell(titles.get(tid, tid)), Cell(" / ".join(row)), Cell(col), Cell(c.old.text),
                           Cell(c.new.text), Cell("-" if rel is None else f"{rel:+.1%}", rel),
                           Cell(f"{c.noise:.1%}", c.noise)])
        return t


#: the definition the comparison adds to the report's
DEFINITION = " ".join(__doc__.split("\n\n", 1)[1].split())
