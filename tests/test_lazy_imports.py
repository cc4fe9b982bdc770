"""A transcription loads only what it uses: no scoring stack, no plotting, no sympy (issue 13, memory)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("mir_eval", "scipy.stats", "matplotlib", "sympy")


def modules_after(code: str) -> list[str]:
    """Which of HEAVY a fresh interpreter holds after running ``code``."""
    probe = code + f"\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_package_and_cli_import_no_scoring_or_plotting_stack():
    assert modules_after("import mt3_demo, mt3_demo.cli, mt3_demo.models.mt3.adapter") == []


def test_a_model_built_for_a_checkpoint_skips_init_and_sympy():
    code = """
import torch
from mt3_demo.checkpoints import empty_weights
from mt3_demo.models.t5 import T5, T5Dims
dims = T5Dims.from_config(dict(d_model=64, num_heads=2, d_kv=32, d_ff=128, num_layers=2, vocab_size=40), input_dim=16)
with empty_weights():
    model = T5(dims)
assert all(p.is_meta for p in model.parameters())
"""
    assert modules_after(code) == []


def test_loading_yourmt3_and_mr_mt3_on_the_meta_device_imports_no_sympy():
    code = """
from pathlib import Path
from mt3_demo.models.mr_mt3 import checkpoint as ck
from mt3_demo.models.yourmt3.model import load_model
load_model(Path("tests/fixtures/yourmt3/set_a/tiny_model/last.ckpt"))
ck.load_model(ck.location_for_file(Path("tests/fixtures/mr_mt3/set_b/model.ckpt")))
"""
    assert modules_after(code) == []


def test_scoring_still_loads_mir_eval_when_it_is_used():
    code = """
from mt3_demo.metrics import score
from mt3_demo.notes import Note
assert score([Note(0.0, 0.5, 60)], [Note(0.0, 0.5, 60)])["onset"]["f1"] == 1.0
"""
    assert "mir_eval" in modules_after(code)
