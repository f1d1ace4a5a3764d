"""RTN vs MSE scale search on the tiny perturbed model, measured with the quality report.

Two tiny models: the random one (its next-token distribution is nearly flat, so top-1 flips
under any noise) and the same model after 40 Adam steps on a Markov language (confident like a
trained LM). Each is exported at fp32 and at int4/int8 with both methods, symmetric and
asymmetric, and compared teacher-forced over 256 positions.

    .venv/bin/python benchmarks/quant_methods.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zaya_edge.export import export_model  # noqa: E402
from zaya_edge.export.fixtures.random_model import MarkovLanguage, tiny_model, train_briefly  # noqa: E402
from zaya_edge.app.quality import quality  # noqa: E402

VARIANTS = [
    ("int4", False, "rtn"), ("int4", False, "mse"), ("int4", True, "rtn"), ("int4", True, "mse"),
    ("int8", False, "rtn"), ("int8", False, "mse"),
]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=None, help="keep artifacts and token files here")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1], help="tiny_model seeds")
    args = ap.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="zaya-quant-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"{'model':<14}{'tokens':<8}{'precision':<11}{'method':<7}{'top-1':>8}{'mean KL':>10}{'max|Δ|':>8}{'ppl':>9}{'ppl ref':>9}")
    try:
        for seed in args.seeds:
            for trained in (False, True):
                model = tiny_model(seed=seed)
                language = MarkovLanguage(model.config.vocab_size, seed=0)
                if trained:
                    train_briefly(model, language, steps=40)
                name = f"{'trained' if trained else 'random'}-s{seed}"
                base = root / name
                export_model(model, base / "fp32", precision="fp32", all_logits=True, progress=False, force=True)
                tokens = {
                    "random": None,
                    "markov": base / "markov.npy",
                }
                np.save(tokens["markov"], language.sample(1, 256, seed=99)[0])
                for precision, asym, method in VARIANTS:
                    art = base / f"{precision}-{'asym' if asym else 'sym'}-{method}"
                    export_model(model, art, precision=precision, asymmetric=asym, quant_method=method,
                                 all_logits=True, progress=False, force=True)
                    for kind, path in tokens.items():
                        r = quality(art, base / "fp32", tokens_file=path, length=256)
                        label = f"{precision}{' asym' if asym else ''}"
                        print(f"{name:<14}{kind:<8}{label:<11}{method:<7}{100 * r.top1_agreement:>7.1f}%"
                              f"{r.mean_kl:>10.5f}{r.max_abs_logit_diff:>8.3f}{r.perplexity_artifact:>9.2f}"
                              f"{r.perplexity_reference:>9.2f}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
