"""Plant one plausible bug at a time and check that the float32-bounded parity tests catch it.

    python tests/planted_bugs.py      # prints one line per bug: CAUGHT or MISSED

Each bug is patched into the package in a fresh subprocess, then the parity tests of that family
run; a bug counts as caught when at least one of them fails (issue 9: loosened tolerances must keep
their teeth).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BUGS = {
    "MT3 frontend: Hamming window instead of Hann": ("tests/test_mt3_features.py", """
import torch
from mt3_demo.models.mt3 import features as F
init = F.LogMel.__init__
def patched(self, *a, **k):
    init(self, *a, **k)
    self.window = torch.hamming_window(F.FFT_SIZE, periodic=True)
F.LogMel.__init__ = patched
"""),
    "MT3 frontend: frames one hop late (off-by-one frame)": ("tests/test_mt3_features.py", """
import numpy as np, torch
from mt3_demo.models.mt3 import features as F
call = F.LogMel.__call__
def patched(self, samples, start=0, stop=None):
    x = torch.as_tensor(samples, dtype=torch.float32).reshape(-1)
    return call(self, torch.cat([torch.zeros(F.HOP), x])[: x.numel()], start, stop)
F.LogMel.__call__ = patched
"""),
    "MR-MT3 frontend: slaney mel scale instead of HTK": ("tests/test_mr_mt3.py", """
import torchaudio.functional as TF
fb = TF.melscale_fbanks
TF.melscale_fbanks = lambda *a, **k: fb(*a, **{**k, "mel_scale": "slaney"})
"""),
    "MR-MT3 frontend: 8 kHz top edge instead of 7.6 kHz": ("tests/test_mr_mt3.py", """
from mt3_demo.models.mr_mt3 import frontends as fe
mel = fe._mel_matrix
fe._mel_matrix = lambda n, f_max, device: mel(n, 8000.0, device)
"""),
    "YourMT3 frontend: log(|X| + 1e-6) instead of 1e-5": ("tests/test_yourmt3_model.py", """
from mt3_demo.models.yourmt3 import features
features.LOG_EPS = 1e-6
"""),
    "YourMT3 encoder: RoPE on rotate-half pairs instead of adjacent pairs": ("tests/test_yourmt3_model.py", """
import torch
from mt3_demo.models.yourmt3 import encoder
def forward(self, q):
    n = q.shape[-2]
    pos = torch.linspace(-1.0, 1.0, n) if self.kind == "pixel" else torch.arange(n, dtype=torch.float32)
    ang = pos[:, None] * self.freqs.float()[None, :]
    cos, sin = ang.cos(), ang.sin()
    r = 2 * self.freqs.numel()
    x0, x1 = q[..., : r // 2], q[..., r // 2: r]
    return torch.cat([x0 * cos - x1 * sin, x1 * cos + x0 * sin, q[..., r:]], dim=-1)
encoder.Rotary.forward = forward
"""),
    "T5 stack: exact-erf GELU instead of the tanh approximation": ("tests/test_mt3_model.py", """
import torch.nn.functional as F
gelu = F.gelu
F.gelu = lambda x, approximate="none": gelu(x)
"""),
    "MR-MT3 decoding: memory row not shifted (keeps the previous segment's start token)": ("tests/test_mr_mt3.py", """
from mt3_demo.models.mr_mt3 import model
made = model.memory_ids_from_generated
model.memory_ids_from_generated = lambda g, *a, **k: [1] + made(g, *a, **k)[1:]
"""),
}

RUNNER = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
{patch}
import pytest
sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", {test!r}]))
"""


def main() -> int:
    missed = 0
    for name, (test, patch) in BUGS.items():
        code = RUNNER.format(root=str(ROOT), tests=str(ROOT / "tests"), patch=patch, test=test)
        rc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True).returncode
        caught = rc == 1  # 1: tests failed; 0: all passed; other: the harness broke
        missed += not caught
        print(f"{'CAUGHT' if caught else 'MISSED' if rc == 0 else f'ERROR rc={rc}'}  {name}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
