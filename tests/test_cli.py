"""The command line: expected failures are one clean line (exit 2) raised before any long work,
nothing the user owns is overwritten or deleted, and no code in a checkpoint runs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lsnn.compiler.cli import main


@pytest.fixture
def no_long_work(monkeypatch):
    """Fail the test if a compile or a bench starts: the checks must come before them."""
    import lsnn.bench.harness
    import lsnn.compiler

    def started(*a, **k):
        raise AssertionError("the long work started before the destination was checked")

    monkeypatch.setattr(lsnn.compiler, "compile", started)
    monkeypatch.setattr(lsnn.bench.harness, "run_bench", started)


def _webapp(folder):
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text('{"name": "my app"}')
    (folder / "index.js").write_text("console.log('mine')")
    return folder


def _bench_config(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({"models": [], "runtimes": ["torch"]}))
    return str(tmp_path / "cfg.json")


def test_bench_never_replaces_a_folder_holding_data(tmp_path, capsys, no_long_work):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "data.csv").write_text("1,2\n")
    assert main(["bench", "--config", _bench_config(tmp_path), "--out", str(out)]) == 2
    assert f"lsnn bench: error: {out} exists and was not written by lsnn" in capsys.readouterr().err
    assert os.listdir(out) == ["data.csv"] and (out / "data.csv").read_text() == "1,2\n"


def test_compile_never_replaces_a_folder_with_a_manifest_json(tmp_path, capsys, no_long_work):
    out = _webapp(tmp_path / "webapp")
    assert main(["compile", "model.onnx", "-o", str(out)]) == 2
    assert "was not written by lsnn (no .lsnn-folder in it)" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["index.js", "manifest.json"]


def test_compile_to_the_current_folder_is_a_clean_error(tmp_path, capsys, monkeypatch, no_long_work):
    here = _webapp(tmp_path / "app")
    monkeypatch.chdir(here)
    assert main(["compile", "model.onnx", "-o", "."]) == 2
    err = capsys.readouterr().err
    assert "is the current folder or holds it" in err and "Traceback" not in err
    assert sorted(os.listdir(here)) == ["index.js", "manifest.json"] and os.listdir(tmp_path) == ["app"]


@pytest.mark.parametrize("command", ["compile", "bench"])
def test_unwritable_destination_fails_at_once(tmp_path, capsys, command, no_long_work):
    (tmp_path / "a-file").write_text("x")  # root can write anywhere, but not under a regular file
    out = str(tmp_path / "a-file" / "out")
    args = ["compile", "model.onnx", "-o", out] if command == "compile" else \
        ["bench", "--config", _bench_config(tmp_path), "--out", out]
    assert main(args) == 2
    assert f"cannot write the {'compiled artifact' if command == 'compile' else 'bench report'} to {out}: " \
           f"{tmp_path / 'a-file'} is not a writable folder" in capsys.readouterr().err


def test_run_refuses_to_write_its_outputs_over_its_inputs(tmp_path, capsys, monkeypatch):
    x = np.ones((3, 1, 4), np.float32)
    np.savez(tmp_path / "in.npz", X=x)
    os.link(tmp_path / "in.npz", tmp_path / "hardlink.npz")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    for spelling in (str(tmp_path / "in.npz"), "../in.npz", "./../sub/../in.npz", str(tmp_path / "hardlink.npz")):
        assert main(["run", "model.onnx", "--inputs", "../in.npz", "--outputs", spelling]) == 2
        assert "is the --inputs file" in capsys.readouterr().err
    with np.load(tmp_path / "in.npz") as z:
        assert np.array_equal(z["X"], x)
    assert main(["run", "model.onnx", "--inputs", "../in.npz", "--outputs", "model.onnx"]) == 2
    assert "is the model" in capsys.readouterr().err


def test_run_and_export_refuse_a_folder_or_an_unwritable_output(tmp_path, capsys, tiny_checkpoint):
    (tmp_path / "a-file").write_text("x")
    np.savez(tmp_path / "in.npz", X=np.ones((3, 1, 4), np.float32))
    for out, message in ((tmp_path, "is a folder; name a file"),
                         (tmp_path / "a-file" / "m.onnx", "is not a writable folder")):
        assert main(["export", str(tiny_checkpoint), "-o", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert main(["run", "m.onnx", "--inputs", str(tmp_path / "in.npz"), "--outputs", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert main(["export", str(tiny_checkpoint), "-o", str(tiny_checkpoint / "checkpoint.pt")]) == 2
    assert "is the checkpoint" in capsys.readouterr().err


class Payload:
    """Unpickling this creates the file ``path``: code run by loading a checkpoint."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("command", ["export", "evaluate", "resume"])
def test_a_checkpoint_carrying_a_pickle_payload_is_refused(tmp_path, capsys, command, tiny_checkpoint):
    ran = tmp_path / "payload-ran"
    state = torch.load(tiny_checkpoint / "checkpoint.pt", weights_only=True)
    torch.save({**state, "extra": Payload(ran)}, tiny_checkpoint / "checkpoint.pt")
    args = {"export": ["export", str(tiny_checkpoint), "-o", str(tmp_path / "m.onnx")],
            "evaluate": ["evaluate", str(tiny_checkpoint)],
            "resume": ["train", "--task", "store-recall", "--model", "lsnn", "--out", str(tiny_checkpoint),
                       "--resume", "--steps", "2", "--quiet"]}[command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{tiny_checkpoint / 'checkpoint.pt'}: refused" in err and "would run code" in err
    assert not ran.exists() and not (tmp_path / "m.onnx").exists()


def test_a_corrupt_config_json_is_named(capsys, tiny_checkpoint):
    (tiny_checkpoint / "config.json").write_text('{"model": ')
    assert main(["evaluate", str(tiny_checkpoint)]) == 2
    assert f"{tiny_checkpoint / 'config.json'}: corrupt checkpoint configuration" in capsys.readouterr().err


BAD_FLAGS = [
    (["train", "--task", "store-recall", "--model", "lsnn", "--out", "x"], "--threads", "0"),
    (["train", "--task", "store-recall", "--model", "lsnn", "--out", "x"], "--steps", "-1"),
    (["train", "--task", "store-recall", "--model", "lsnn", "--out", "x"], "--batch-size", "0"),
    (["train", "--task", "store-recall", "--model", "lsnn", "--out", "x"], "--lr", "0"),
    (["train", "--task", "store-recall", "--model", "lsnn", "--out", "x"], "--lr", "nan"),
    (["train", "--task", "store-recall", "--model", "lsnn", "--out", "x"], "--eval-every", "-2"),
    (["train", "--task", "store-recall", "--model", "lsnn", "--out", "x"], "--eval-limit", "0"),
    (["train", "--task", "store-recall", "--model", "lsnn", "--out", "x"], "--seed", "-1"),
    (["evaluate", "ckpt"], "--limit", "0"),
    (["evaluate", "ckpt"], "--threads", "-3"),
    (["run", "m.onnx", "--inputs", "a.npz", "--outputs", "b.npz"], "--threads", "two"),
]


@pytest.mark.parametrize("args,flag,value", BAD_FLAGS)
def test_out_of_range_numbers_are_rejected_naming_the_flag(capsys, args, flag, value):
    with pytest.raises(SystemExit) as e:
        main([*args, flag, value])
    assert e.value.code == 2
    assert f"argument {flag}: expected a" in capsys.readouterr().err


TORCH_FREE = """
import sys
import numpy as np
{how}
assert "torch" not in sys.modules, [m for m in sys.modules if m.startswith("torch")]
print("torch-free")
"""


@pytest.mark.parametrize("how", [
    "from lsnn.compiler.cli import main\n"
    "np.savez(sys.argv[2], X=np.ones((3, 1, 4), np.float32))\n"
    "assert main(['run', sys.argv[1], '--inputs', sys.argv[2], '--outputs', sys.argv[3]]) == 0",
    "import lsnn.targets\n"
    "lsnn.targets.load(sys.argv[1]).run({'X': np.ones((3, 1, 4), np.float32)})",
], ids=["lsnn-run", "targets-load"])
def test_running_an_artifact_does_not_import_torch(tmp_path, tiny_artifact, how):
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE.format(how=how), str(tiny_artifact),
                           str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "torch-free" in proc.stdout, proc.stderr[-3000:]


def test_a_full_disk_while_saving_the_artifact_is_a_clean_error(tmp_path, capsys, monkeypatch):
    import errno

    import lsnn.targets.artifact
    from lsnn.compiler.onnx.export import export
    from lsnn.reference import build_model

    export_path = tmp_path / "m.onnx"
    export_path.write_bytes(export(build_model("lsnn", n_in=3, n_lif=1, n_alif=1, n_out=2)).SerializeToString())

    def disk_full(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(lsnn.targets.artifact, "sha256", disk_full)
    assert main(["compile", str(export_path), "-o", str(tmp_path / "out")]) == 2
    assert f"cannot write the compiled artifact to {tmp_path / 'out'}: No space left on device" in \
        capsys.readouterr().err
    assert os.listdir(tmp_path) == ["m.onnx"]
