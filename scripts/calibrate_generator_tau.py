"""Calibrate EchoSelect's τ for a trained generator of the `shapes` world, on the world it was trained
on, never on the benchmark's (`shapes` runs use world seed 0).

The procedure of the `shapes-hog` extractor's own thresholds (echobench/echoalign/features.py): at 30% and
at 50% instance-dependent noise on world 777 with 4,000 images (the training split, as a run splits it),
EchoMod with the model, EchoSelect's similarities, and the τ maximising Youden's J (true-clean rate +
true-noisy rate − 1; `echoselect.youden_tau`). The two thresholds are the model's (low-noise,
high-noise) pair, used wherever EchoAlign runs this model with this extractor and no `tau` is given
(`methods.resolve_tau`). Writes FOLDER/calibration.json (FOLDER: the model's shipped folder) with the
per-noise measurements, the engine options used and this command.

    python scripts/calibrate_generator_tau.py --model shapes --engine-option steps=10 --engine-option vae=trained
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NOISES = ("instance:0.3", "instance:0.5")  # the low-noise and high-noise threshold, as for shapes-hog


def calibrate(model: str, engine_options: dict, *, world_seed: int = 777, n_train: int = 4000, seed: int = 1,
              extractor: str = "shapes-hog", engine: str = "eager", progress: bool = True) -> dict:
    from echobench.echoalign.diffusion_configs import trained_folder
    from echobench.echoalign.methods import EchoAlignParams
    from echobench.harness.setting import select_report, setting_task

    options = {"model": model, **engine_options}
    measured = {}
    for noise in NOISES:
        task, clean = setting_task("shapes", {"n_train": n_train, "n_test": 10, "seed": world_seed}, noise, seed)
        params = EchoAlignParams(engine=engine, engine_options=options, extractor=extractor)
        doc = select_report(task, clean, params, progress=progress)
        e = doc["echoselect"]
        measured[noise] = {"youden_tau": round(e["youden_tau"], 4), "youden_j": round(e["youden_j"], 4),
                           "auroc": round(e["auroc"], 4), "n": e["n"], "n_noisy": e["n_noisy"]}
    return {"taus": {extractor: [measured[n]["youden_tau"] for n in NOISES]},
            "measured": measured, "engine": engine, "engine_options": options,
            "world": {"seed": world_seed, "n_train": n_train}, "noise_seed": seed,
            "folder": str(trained_folder(model))}


def main() -> int:
    from echobench.cli.options import key_values
    from echobench.files import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    doc = calibrate(args.model, key_values(args.engine_option, "--engine-option"), n_train=args.n_train,
                    progress=not args.no_progress)
    doc["command"] = "python scripts/calibrate_generator_tau.py " + " ".join(sys.argv[1:])
    path = Path(doc.pop("folder")) / "calibration.json"
    atomic_write_json(path, doc)
    print(json.dumps(doc, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
