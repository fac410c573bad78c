"""The fire evaluation (issue 8): made test sequences, the shared clips, and the red loop run over both.

- `tools.fireeval.scenes`: deterministic sequences made from the real footage in ../shared/data
  (look-alikes with no fire, and slow fire onsets with a known first flame);
- `tools.fireeval.clips`: the shared clips and stills with their ground truth and tune/check split;
- `tools.fireeval.run`: the appliance's red loop over each of them, scored per clip.

The command line is `tools/eval_fire`.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
"""The shared test media, ../shared/data beside the repository (never copied into it)."""
