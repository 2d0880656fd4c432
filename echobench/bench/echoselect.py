"""`echobench bench echoselect`: EchoSelect's throughput against the released code's loop, in one run.

Reference: the loop of KevinCarpricorn/EchoAlign `clip_filter.py` `get_indices`: for each pair, both
images through open_clip's PIL preprocess (32 px → 224 bicubic), `encode_image` one image at a time in
fp32, normalise, dot product. Ours: `OpenClip.extract` on batches (tensor preprocess, half precision on
GPU) for the originals and the modified images, then `paired_cosine`. Both use the same model object
(random weights by default, `--pretrained none`: the compute is the same as with trained weights), on
the same random uint8 image pairs. Reported: pairs per second of each, the speed-up ratio, and the
largest difference in S between the two paths (they differ by the PIL vs tensor resize and, on GPU,
half precision).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def released_loop(model, preprocess, originals: np.ndarray, modified: np.ndarray, device) -> np.ndarray:
    """The released code's per-pair loop (see the module docstring), returning S."""
    import torch
    from PIL import Image

    out = np.empty(len(originals), dtype=np.float32)
    for i in range(len(originals)):
        a = preprocess(Image.fromarray(originals[i])).unsqueeze(0).to(device)
        b = preprocess(Image.fromarray(modified[i])).unsqueeze(0).to(device)
        with torch.no_grad():
            fa, fb = model.encode_image(a), model.encode_image(b)
            fa = fa / fa.norm(dim=-1, keepdim=True)
            fb = fb / fb.norm(dim=-1, keepdim=True)
            out[i] = float(fa @ fb.T)
    return out


def bench_echoselect(*, n: int = 128, size: int = 32, model: str = "ViT-B-32", pretrained: str = "none",
                     batch_size: int = 64, device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    import torch

    from echobench.echoalign.echoselect import paired_cosine
    from echobench.environment import environment
    from echobench.echoalign.features import ClipOptions, OpenClip, create_clip

    rng = np.random.default_rng(seed)
    originals = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    modified = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    options = ClipOptions(model=model, pretrained=pretrained, batch_size=batch_size)
    torch.manual_seed(seed)
    clip_model, preprocess = create_clip(options)
    dev = torch.device(device)
    reference_model = clip_model.to(dev).eval()

    released_loop(reference_model, preprocess, originals[:2], modified[:2], dev)  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    s_ref = released_loop(reference_model, preprocess, originals, modified, dev)
    _sync(dev)
    ref_s = time.perf_counter() - t0

    ours = OpenClip(options, device, built=(copy.deepcopy(clip_model), preprocess))
    ours.extract(originals[:2])  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    s_ours = paired_cosine(ours.extract(originals), ours.extract(modified))
    _sync(dev)
    ours_s = time.perf_counter() - t0
    return {
        "n_pairs": n, "image_size": size, "model": model, "pretrained": pretrained, "batch_size": batch_size,
        "device": device, "torch_threads": torch.get_num_threads(),
        "released_loop": {"seconds": round(ref_s, 3), "pairs_per_s": round(n / ref_s, 2), "precision": "fp32, one image at a time"},
        "echobench": {"seconds": round(ours_s, 3), "pairs_per_s": round(n / ours_s, 2),
                      "precision": "fp16" if dev.type == "cuda" else "fp32", "batch_size": batch_size},
        "speedup": round(ref_s / ours_s, 2),
        "max_abs_similarity_difference": float(np.abs(s_ref - s_ours).max()),
        "environment": environment(device),
    }


def format_bench_echoselect(doc: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = [["released loop (clip_filter.py)", doc["released_loop"]["precision"], doc["released_loop"]["seconds"],
             doc["released_loop"]["pairs_per_s"], "1.00×"],
            [f"echobench (batch {doc['batch_size']})", doc["echobench"]["precision"], doc["echobench"]["seconds"],
             doc["echobench"]["pairs_per_s"], f"{doc['speedup']:.2f}×"]]
    return "\n".join([
        f"EchoSelect similarity of {doc['n_pairs']} pairs of {doc['image_size']} px images, open_clip "
        f"{doc['model']} (pretrained={doc['pretrained']}) on {doc['device']} ({doc['torch_threads']} torch threads)",
        tabulate(rows, headers=["path", "precision", "seconds", "pairs/s", "ratio"], tablefmt="github"),
        f"largest |ΔS| between the two paths: {doc['max_abs_similarity_difference']:.2e}",
    ])
