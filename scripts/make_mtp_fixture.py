#!/usr/bin/env python
"""Build the MTP test fixture: stories260K (llama2.c) -> HF-Llama safetensors + a trained
DeepSeek-style depth-1 MTP head at ``model.layers.5.*`` (config ``num_nextn_predict_layers: 1``).

    python scripts/make_mtp_fixture.py --out /tmp/stories260K-mtp
    python scripts/make_mtp_fixture.py --head-out tests/mtp/data/stories260K_mtp1_head.safetensors
    python scripts/make_mtp_fixture.py --out /tmp/ck \
        --head-in tests/mtp/data/stories260K_mtp1_head.safetensors --probe-out /tmp/probe.jsonl

The conversion is checked against an independent numpy port of llama2.c's run.c before
anything is written. Seeded; trains on CPU in about a minute. Never commit stories260K itself:
the tests rebuild the trunk from ../shared/data and add the committed head.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import mtp_fixture as fixture  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=str(ROOT.parent / "shared/data/stories260K.bin"))
    ap.add_argument("--out", help="write the full checkpoint folder here")
    ap.add_argument("--head-out", help="write only the MTP head's tensors (safetensors)")
    ap.add_argument("--head-in", help="use this trained head instead of training (with --out)")
    ap.add_argument("--probe-out", help="also write a JSONL probe sampled from the trunk")
    ap.add_argument("--probe-docs", type=int, default=32)
    ap.add_argument("--probe-len", type=int, default=96)
    ap.add_argument("--probe-seed", type=int, default=123)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (args.out or args.head_out or args.probe_out):
        ap.error("give --out, --head-out and/or --probe-out")
    import numpy as np
    import torch

    m = fixture.read_llama2c(args.bin)
    model = fixture.build_trunk(m)
    toks = [1, 403, 407, 261, 378, 429, 14, 300, 511, 0]
    ref = fixture.reference_logits(m, toks)
    with torch.no_grad():
        got = model(torch.tensor([toks])).logits[0].double().numpy()
    err = float(np.abs(ref - got).max())
    print(f"conversion check: max |run.c - transformers| logit difference {err:.2e}")
    if err > 1e-3:
        print("conversion check failed", file=sys.stderr)
        return 1
    if args.probe_out:
        import json

        ids = fixture.sample_sequences(model, args.probe_docs, args.probe_len, args.probe_seed)
        Path(args.probe_out).write_text(
            "".join(json.dumps({"input_ids": s}) + "\n" for s in ids.tolist()))
        print(f"wrote {args.probe_out}")
    if not (args.out or args.head_out):
        return 0
    if args.head_in:
        from safetensors.numpy import load_file

        fixture.make_fixture(args.bin, args.out, load_file(args.head_in))
        print(f"wrote {args.out} (head from {args.head_in})")
        return 0
    t0 = time.time()
    torch.manual_seed(args.seed)
    seqs = fixture.sample_sequences(model, 128, 128, args.seed)
    mtp = fixture.train_mtp_head(model, seqs, steps=args.steps, seed=args.seed, log=print)
    head = fixture.mtp_state_dict(mtp, m.n_layers)
    print(f"sampled + trained in {time.time() - t0:.1f} s")
    if args.head_out:
        from safetensors.numpy import save_file

        Path(args.head_out).parent.mkdir(parents=True, exist_ok=True)
        save_file(head, args.head_out, metadata={"format": "pt", "seed": str(args.seed),
                                                 "steps": str(args.steps)})
        print(f"wrote {args.head_out}")
    if args.out:
        fixture.make_fixture(args.bin, args.out, head)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
