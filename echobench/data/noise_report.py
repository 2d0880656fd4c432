"""`echobench noise`: noisy labels of one dataset and what they look like (rate, per-class confusion)."""

from __future__ import annotations

from typing import Any

import numpy as np

from echobench.checks import check_seed
from echobench.data import DATASETS, data_root, load_dataset
from echobench.errors import EchobenchError
from echobench.data.noise import NOISES, NoiseSpec, empirical_transition
from echobench.registry import unknown_name_error
from echobench.seeding import numpy_rng

HUMAN = {"cifar10n": 10, "cifar100n": 100}  # dataset → number of classes


def _labels_and_context(dataset: str, spec: NoiseSpec, labels_file: str | None, root: str | None):
    """Clean labels, class names and the context a noise kind needs, loading as little as possible."""
    if dataset in HUMAN and spec.kind != "instance":
        # CIFAR-N: the label file carries the clean labels; the images are only needed for `instance`.
        from pathlib import Path

        from echobench.data.cifar_n import read_human_labels

        labels = read_human_labels(dataset, labels_file=Path(labels_file) if labels_file else None, root=data_root(root))
        clean = labels.pop("clean")
        return clean, [str(i) for i in range(HUMAN[dataset])], {"human_labels": labels}
    if labels_file:
        raise EchobenchError("--labels-file applies to cifar10n and cifar100n only")
    ds = load_dataset(dataset, root)
    return ds.train_labels, list(ds.class_names), {"images": ds.train_images, "human_labels": ds.extras.get("human_labels")}


def noise_report(dataset: str, kind: str, rate: float, seed: int, *, labels_file: str | None = None,
                 data_root: str | None = None) -> dict[str, Any]:
    check_seed(seed, "--seed")
    if dataset not in DATASETS:
        raise unknown_name_error("dataset", dataset, DATASETS.names())
    if ":" in kind:
        spec = NoiseSpec.parse(kind)
    elif dataset in HUMAN and kind not in NOISES:  # for CIFAR-N the kind may be the label set itself
        spec = NoiseSpec("human", 0.0, kind)
    else:
        spec = NoiseSpec.parse(f"{kind}:{rate}")
    clean, names, context = _labels_and_context(dataset, spec, labels_file, data_root)
    noisy = spec.apply(clean, len(names), numpy_rng(seed, "noise"), **context)
    num_classes = noisy.transition.shape[0]
    confusion = empirical_transition(clean, noisy.labels, num_classes)
    per_class = []
    for c in range(num_classes):
        rows = clean == c
        wrong = np.bincount(noisy.labels[rows & (noisy.labels != c)], minlength=num_classes)
        per_class.append({"class": names[c] if c < len(names) else str(c), "n": int(rows.sum()),
                          "flip_rate": float(1.0 - confusion[c, c]),
                          "most_common_flip": (names[int(wrong.argmax())] if wrong.any() else None)})
    return {"dataset": dataset, "noise": str(spec), "seed": seed, "nominal_rate": spec.rate if spec.kind != "human" else None,
            "realized_rate": noisy.realized_rate, "num_samples": int(len(clean)), "per_class": per_class,
            "empirical_transition": confusion.round(4).tolist(), "transition": noisy.transition.round(4).tolist()}


def format_noise_report(doc: dict[str, Any]) -> str:
    from tabulate import tabulate

    lines = [f"{doc['dataset']} · {doc['noise']} · seed {doc['seed']} · {doc['num_samples']} training labels"]
    nominal = f" (nominal {doc['nominal_rate']:.2%})" if doc["nominal_rate"] is not None else ""
    lines.append(f"realized noise rate: {doc['realized_rate']:.2%}{nominal}\n")
    rows = [[p["class"], p["n"], f"{p['flip_rate']:.2%}", p["most_common_flip"] or "—"] for p in doc["per_class"]]
    lines.append(tabulate(rows, headers=["class", "n", "flipped", "most common noisy label"], stralign="left"))
    t = np.array(doc["empirical_transition"])
    if t.shape[0] <= 10:
        lines.append("\nrealized transition matrix (row: clean, column: noisy), %:")
        lines.append(tabulate((t * 100).round(1).tolist(), headers=[str(i) for i in range(t.shape[0])],
                              showindex=True, floatfmt=".1f"))
    return "\n".join(lines)
