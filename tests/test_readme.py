"""The README's "Your own network" example, run exactly as printed: its Python block saved as the
file it names, then its shell block line by line, in a fresh folder."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Your own network"


def blocks(section: str) -> dict[str, str]:
    """The fenced code blocks of one README section, by language (one of each)."""
    text = README.read_text()
    body = text[text.index(section) + len(section):]
    body = body[:body.index("\n## ")]
    found = re.findall(r"```(\w+)\n(.*?)```", body, re.S)
    assert sorted(lang for lang, _ in found) == ["bash", "python"], found
    return dict(found)


def test_readme_own_network_example_runs_as_printed(tmp_path, arm_toolchain):
    code = blocks(SECTION)
    saved_as = re.search(r"Save this as `(\w+\.py)`", README.read_text()).group(1)
    (tmp_path / saved_as).write_text(code["python"])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for line in code["bash"].strip().splitlines():
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
    assert outputs[0].count("PASS") >= 2 and "FAIL" not in outputs[0]  # verify on cpu and cortex-m4
    assert outputs[1].rstrip().endswith("PASS")
    results = json.loads((tmp_path / "bench-mynet" / "results.json").read_text())
    assert {"alif1", "alif2"} <= set(json.dumps(results).replace('"', " ").split())  # per-layer figures
