"""The bench report as its readers use it: the HTML page (header, headline, plots, real tables, parsed
with a real HTML parser), the training budget beside every checkpoint's accuracy, and the comparison
with an earlier run (``lsnn bench --baseline``). Results are built here; one tiny bench runs end to end."""
import copy
import json
from html.parser import HTMLParser

import pytest

from lsnn.bench.baseline import BaselineError, load
from lsnn.bench.provenance import training_budget
from lsnn.bench.report import compare, html_report, markdown, write
from lsnn.compiler.cli import main
from lsnn.reference.errors import LsnnError, MissingFileError


# -- a results dict as lsnn bench writes it -----------------------------------------------------------

def _timing(median: float, spread: float = 0.1) -> dict:
    return {"median": median, "p10": median * (1 - spread / 2), "p90": median * (1 + spread / 2)}


def _run(model: str, runtime: str, batch: int, per_seq: float) -> dict:
    steps = 100
    return {"model": model, "runtime": runtime, "batch": batch, "threads": 1, "steps": steps, "options": {},
            "latency_per_call_s": _timing(per_seq * batch), "latency_per_sequence_s": _timing(per_seq),
            "latency_per_step_s": _timing(per_seq / steps), "throughput_seq_per_s": 1 / per_seq,
            "artifact_bytes": 40960, "repeats": 5}


def _model(name: str, kind: str, acc: float, energy: float, training: dict) -> dict:
    return {"name": name, "kind": kind, "task": "store-recall", "weight_bytes": 8192, "metric": "accuracy",
            "accuracy": {"torch": acc, "ort": acc, "cpu": acc, "cortex-m4": acc}, "training": training,
            "acs_per_inference": 1e5, "macs_per_inference": 0.0 if kind == "lsnn" else 2e5,
            "energy_uj_per_inference": energy, "firing_rate_hz": {"all": 12.0} if kind == "lsnn" else {},
            "peak_working_memory_bytes": {"cpu": {"batch": 4, "bytes": 3 * 2**20}},
            "layers": [{"name": "alif", "acs": 1e5, "macs": 0.0, "energy_uj": energy}]}


def results_dict() -> dict:
    """Two checkpoints of one task (an LSNN with a full training budget, an LSTM whose older metrics.json
    records only steps and time), three runtimes at batch 1 and 4, one Cortex-M core."""
    lsnn = _model("sr-lsnn", "lsnn", 0.98, 0.2,
                  {"steps": 1000, "batch_size": 64, "samples_seen": 64000, "train_seconds": 600.0,
                   "processes": 1, "threads": 1})
    lstm = _model("sr-lstm", "lstm", 0.5, 1.0, {"steps": 300, "train_seconds": 120.0})
    runs = [_run(m, rt, b, per_seq)
            for m, base in (("sr-lsnn", 1e-3), ("sr-lstm", 4e-3))
            for rt, f in (("torch", 20), ("ort", 2), ("cpu", 1)) for b, per_seq in ((1, base * f), (4, base * f / 3))]
    mcu = [{"model": m, "core": "cortex-m4", "board": "mps2-an386", "sequences": 2, "steps": 100, "accuracy": a,
            "instructions_per_step": ips, "flash_bytes": 10240, "ram_bytes": 4096, "stack_bytes": 200}
           for m, a, ips in (("sr-lsnn", 0.98, 5000.0), ("sr-lstm", 0.5, 80000.0))]
    return {"schema": "lsnn-bench/1",
            "environment": {"cpu": "Test CPU 9000", "cores": 2, "machine": "x86_64", "python": "3.11", "threads": [1],
                            "torch": "t", "onnxruntime": "o", "onnx": "x", "tvm": "v", "numpy": "n", "gpu": False,
                            "time": "2026-11-30T12:00:00+0000", "lsnn": "0.1.0", "git_commit": "abc123def456"},
            "config": {"batch_sizes": [1, 4], "threads": [1], "heldout_limit": 8, "e_ac_pj": 0.9, "e_mac_pj": 4.6,
                       "task": None, "inputs": None},
            "energy_source": "Horowitz 2014", "models": [lsnn, lstm], "runs": runs, "microcontrollers": mcu,
            "unavailable": [{"runtime": "cuda", "reason": "no CUDA device"}]}


def slowed(results: dict, runtime: str, factor: float) -> dict:
    """``results`` with every timing of ``runtime`` multiplied by ``factor``."""
    out = copy.deepcopy(results)
    for r in out["runs"]:
        if r["runtime"] == runtime:
            for key in ("latency_per_call_s", "latency_per_sequence_s", "latency_per_step_s"):
                r[key] = {k: v * factor for k, v in r[key].items()}
            r["throughput_seq_per_s"] /= factor
    return out


# -- a small DOM from the standard library's HTML parser ---------------------------------------------

VOID = {"meta", "img", "br", "hr", "input", "link"}


class Node:
    def __init__(self, tag: str, attrs: dict, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def find_all(self, tag: str) -> list:
        found = []
        for c in self.children:
            if isinstance(c, Node):
                found += ([c] if c.tag == tag else []) + c.find_all(tag)
        return found

    def find(self, tag: str):
        return next(iter(self.find_all(tag)), None)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def classes(self) -> set:
        return set((self.attrs.get("class") or "").split())


class Dom(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.root = self.node = Node("#document", {})
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.node)
        self.node.children.append(node)
        if tag not in VOID:
            self.node = node

    def handle_endtag(self, tag):
        node = self.node
        while node is not self.root and node.tag != tag:
            node = node.parent
        assert node.tag == tag, f"</{tag}> closes nothing open"
        self.node = node.parent

    def handle_data(self, data):
        self.node.children.append(data)


def _cells(tr: Node) -> list[str]:
    return [c.text() for c in tr.children if isinstance(c, Node) and c.tag in ("td", "th")]


def _table(section: Node) -> tuple[list[str], list[list[str]]]:
    t = section.find("table")
    return _cells(t.find("thead").find("tr")), [_cells(tr) for tr in t.find("tbody").find_all("tr")]


# -- the page ---------------------------------------------------------------------------------------

def test_html_report_header_headline_and_tables():
    results = results_dict()
    doc = Dom(html_report(results)).root
    header = doc.find("header")
    facts = dict(zip((dt.text() for dt in header.find_all("dt")), (dd.text() for dd in header.find_all("dd"))))
    assert set(facts) >= {"suite", "git commit", "machine", "CPU", "threads", "date"}
    assert "lsnn 0.1.0" in facts["suite"] and facts["git commit"] == "abc123def456"
    assert facts["CPU"] == "Test CPU 9000" and "x86_64, 2 cores" in facts["machine"]
    assert facts["date"] == "2026-11-30T12:00:00+0000" and facts["threads"].startswith("1")

    sections = [s for s in doc.find_all("section")]
    assert [s.attrs["id"] for s in sections][:2] == ["headline-store-recall", "plots"]  # headline, then plots
    head, rows = _table(sections[0])
    assert head == ["figure", "LSNN sr-lsnn", "LSTM sr-lstm", "LSNN / LSTM"]
    by = {r[0]: r[1:] for r in rows}
    assert by["accuracy (reference runtime)"] == ["0.9800", "0.5000", "1.96x"]
    assert by["latency cpu, batch 1, 1 thread(s)"] == ["1.000 ms", "4.000 ms", "0.25x"]
    assert by["instructions/step cortex-m4"][2] == "0.0625x" and by["energy per inference (uJ)"][2] == "0.2x"
    # the training budget of each checkpoint, '-' where its metrics.json lacks a figure
    assert by["training steps"] == ["1,000", "300", "3.33x"]
    assert by["training batch size"] == ["64", "-", "-"] and by["training samples seen"] == ["64,000", "-", "-"]
    assert by["training time (min)"] == ["10.0", "2.0", "5x"]
    found = sections[0].find("p").text()
    assert "scores 0.9800 against the LSTM sr-lstm's 0.5000" in found
    assert "latency cpu, batch 1, 1 thread(s): 0.25x" in found

    figures = {f.attrs["id"]: f for f in sections[1].find_all("figure")}
    assert {"latency", "throughput", "instructions", "energy"} <= set(figures)
    for f in figures.values():
        assert f.find("h3").text() and f.find("img").attrs["src"].startswith("data:image/png;base64,")

    # every table of report.md is an HTML table here, with a heading, rows and its definitions
    md = markdown(results)
    tables = [s for s in sections if s.find("table") is not None]
    assert len(tables) == md.count("\n|---") and not doc.find_all("pre")
    for s in tables:
        head, rows = _table(s)
        assert s.find("h2").text() and head and rows and all(len(r) == len(head) for r in rows)
        assert s.find("dl").find_all("dt"), f"table {s.attrs['id']} without definitions"
    summary = {r[1]: r for r in _table(doc.find_all("section")[2])[1]}  # the first table after the plots
    assert "steps 300, batch -, samples -, 2.0 min, processes -, threads -" in summary["sr-lstm (lstm)"]
    assert "Horowitz 2014" in doc.text() and doc.find("script") is not None  # energy source; sortable tables


def test_a_slowed_runtime_is_flagged_against_its_baseline():
    old = results_dict()
    new = slowed(old, "cpu", 2.0)  # the cpu target twice as slow; noise of every timing: 10%
    new = slowed(new, "ort", 1.05)  # ort 5% slower: within the noise
    c = compare(new, "OLD/results.json", old)
    flagged = {(tid, row, col) for (tid, row, col), _ in c.regressions()}
    # each slowed run once, where first shown: batch 1 in the headline, batch 4 in the latency table
    assert flagged == {("headline-store-recall", ("latency cpu, batch 1, 1 thread(s)",), f"{kind} sr-{m}")
                       for kind, m in (("LSNN", "lsnn"), ("LSTM", "lstm"))} | {
        ("latency", (f"sr-{m}", "cpu", "4", "1"), "per sequence median (p10-p90)") for m in ("lsnn", "lstm")}
    assert "4 regression(s)" in markdown(new, c)
    change = next(ch for k, ch in c.regressions() if k[0] == "latency")
    assert change.relative == pytest.approx(1.0) and change.noise == pytest.approx(0.1)

    md = markdown(new, c)
    assert "## Changes since the baseline" in md and "regression(s) beyond the run-to-run noise" in md
    assert "| ⚠ 2.000 ms (1.900 ms-2.100 ms) (was 1.000 ms (950.0 us-1.050 ms), +100.0%) |" in md
    assert "0.9800 (unchanged)" in md
    doc = Dom(html_report(new, c)).root
    regression = doc.find("section").parent.find_all("section")
    listed = _table(next(s for s in regression if s.attrs["id"] == "regressions"))[1]
    assert ["Latency, throughput and memory", "sr-lsnn / cpu / 4 / 1", "per sequence median (p10-p90)"] in \
        [r[:3] for r in listed] and len(listed) == 4
    marked = [td for td in doc.find_all("td") if "regression" in td.classes()]
    assert marked and all("+100.0%" in td.text() for td in marked if "ms" in td.text())
    ort = slowed(old, "ort", 1.05)
    assert not compare(ort, "OLD/results.json", old).regressions()  # within the noise: nothing flagged


def test_exact_figures_flag_any_change_for_the_worse():
    old = results_dict()
    new = copy.deepcopy(old)
    new["microcontrollers"][0]["instructions_per_step"] = 5200.0
    new["models"][0]["accuracy"]["cpu"] = 0.97
    flagged = {k for k, _ in compare(new, "old.json", old).regressions()}
    assert ("headline-store-recall", ("instructions/step cortex-m4",), "LSNN sr-lsnn") in flagged
    assert ("accuracy", ("sr-lsnn",), "cpu") in flagged
    better = copy.deepcopy(old)
    better["microcontrollers"][0]["instructions_per_step"] = 4000.0
    assert not compare(better, "old.json", old).regressions()


def test_baseline_of_another_schema_or_missing_is_refused(tmp_path, capsys):
    with pytest.raises(MissingFileError, match="baseline results not found: .*nowhere.json"):
        load(tmp_path / "nowhere.json")
    (tmp_path / "old.json").write_text(json.dumps({"schema": "lsnn-bench/0", "runs": []}))
    with pytest.raises(BaselineError, match=r"old.json: baseline results of schema 'lsnn-bench/0'") as e:
        load(tmp_path / "old.json")
    assert isinstance(e.value, LsnnError)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(BaselineError, match="broken.json: corrupt baseline results"):
        load(tmp_path / "broken.json")
    out = tmp_path / "report"  # refused before the bench runs: no report folder
    assert main(["bench", "--quick", "--baseline", str(tmp_path / "old.json"), "--out", str(out)]) == 2
    assert f"lsnn bench: error: {tmp_path / 'old.json'}: baseline results of schema" in capsys.readouterr().err
    assert not out.exists()


def test_training_budget_is_read_not_invented(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "steps": 10, "train_seconds": 3.5}))
    assert training_budget(tmp_path) == {"steps": 10, "train_seconds": 3.5}
    assert training_budget(tmp_path / "none") == {}


def test_write_with_a_baseline(tmp_path):
    old = results_dict()
    out = write(slowed(old, "cpu", 3.0), tmp_path / "report", (tmp_path / "old.json", old))
    assert "⚠" in (out / "report.md").read_text() and 'class="regression"' in (out / "report.html").read_text()
    assert json.loads((out / "results.json").read_text())["runs"][0]["latency_per_sequence_s"]


def test_bench_against_a_baseline_end_to_end(tmp_path, capsys, tiny_store_recall):
    """Two tiny runs of lsnn bench, the second against the first: the budget recorded from metrics.json,
    the commit in the environment, every figure beside the baseline's."""
    from lsnn.reference.train import train

    for kind, params in (("lsnn", {"n_lif": 3, "n_alif": 3}), ("lstm", {"n_hidden": 4})):
        train("store-recall", kind, tmp_path / kind, steps=1, batch_size=4, progress=False,
              model_params=params, task_params=tiny_store_recall)
    cfg = {"models": [str(tmp_path / "lsnn"), str(tmp_path / "lstm")], "runtimes": ["torch", "ort"],
           "batch_sizes": [1], "heldout_limit": 4, "repeats": 2, "warmup": 1, "threads": [1]}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    base = ["bench", "--config", str(tmp_path / "cfg.json")]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    metrics = json.loads((tmp_path / "lsnn" / "metrics.json").read_text())
    assert results["models"][0]["training"]["steps"] == metrics["steps"] == 1
    assert results["environment"]["git_commit"] and results["environment"]["lsnn"]
    assert main(base + ["--baseline", str(tmp_path / "a" / "results.json"), "--out", str(tmp_path / "b")]) == 0
    md = (tmp_path / "b" / "report.md").read_text()
    assert f"Baseline {tmp_path / 'a' / 'results.json'}" in md and "(unchanged)" in md and "(was " in md
    doc = Dom((tmp_path / "b" / "report.html").read_text()).root
    assert doc.find("header") is not None and doc.find_all("section")[0].attrs["id"] == "headline-store-recall"


def test_a_timing_of_one_repeat_is_not_judged():
    """One repeat measures no noise: its change is shown, never flagged."""
    old = results_dict()
    for r in old["runs"]:
        r["repeats"], r["latency_per_sequence_s"] = 1, {k: r["latency_per_sequence_s"]["median"] for k in _timing(1)}
    c = compare(slowed(old, "cpu", 2.0), "old.json", old)
    assert not [k for k, _ in c.regressions() if k[0] == "latency"]
    assert "(was 1.000 ms (1.000 ms-1.000 ms), +100.0%)" in markdown(slowed(old, "cpu", 2.0), c)
