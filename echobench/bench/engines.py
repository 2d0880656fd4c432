"""`echobench bench engines`: EchoMod's engines against diffusers' stock ControlNet pipeline, one run.

Method. One set of components (`tiny` or `sd15`, random or real weights) and one batch of inputs per
batch size: random uint8 images at the dataset size (32 px), labels and per-sample seeds drawn from
`np.random.default_rng(seed)`. The reference row is diffusers' `StableDiffusionControlNetPipeline`
called the way its documentation shows (prompts, PIL control images, `num_inference_steps`,
`guidance_scale`, `controlnet_conditioning_scale`, one `torch.Generator` per sample, `output_type="np"`)
on the control images EchoMod computes, with the same scheduler class. Each engine row is EchoMod
(`DiffusionEchoMod.generate_pixels`) with that engine on the same components and inputs. Every row
runs once untimed (warm-up: compilation, ONNX export, TensorRT build, cuDNN autotuning), then
`repeats` timed runs; the fastest is reported. Reported per row and batch size: images/s, seconds
per denoising step (wall time / steps: it includes the VAE decode and the per-batch setup, so it is
an upper bound of the step itself), peak memory (CUDA: `torch.cuda.max_memory_allocated` during the
timed runs; CPU: the process's peak RSS, a high-water mark over the whole run), and the parity error:
the largest absolute difference of the generated pixels ([0, 1] scale) from the reference row.

Rows are independent of their order (issue 19): a compile row compiles its own graphs with its own
settings (`echobench.engines.compile.engine`: private code objects, options passed to
`torch.compile`), the engine is closed after its row (its graphs and CUDA graphs freed) and dynamo's
remaining caches are reset before the next row. Each row's `build` says what it built and how long it
took: for compile rows the number of graphs compiled for that row, the real compile seconds, and
inductor's FX-graph-cache hits (generated code reused from disk for an identical graph and settings,
e.g. from an earlier run). For a run where no row can profit from another's work even on disk, run
one row per process (scripts/gpu_check.sh does).

A batch size that runs out of memory (or that an engine's profile does not cover) is reported as
unsupported with the reason; an engine that fails otherwise is an "error" row with the exception (its
traceback on stderr, and `echobench bench engines` exits 1). Either way the bench goes on.
"""

from __future__ import annotations

import dataclasses
import gc
import resource
import sys
import time
import traceback
from typing import Any, Callable

import numpy as np

from echobench.errors import EchobenchError

REFERENCE = "diffusers-pipeline"


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _time(run: Callable[[], np.ndarray], device, repeats: int) -> tuple[float, np.ndarray, float | None]:
    """Warm-up once, then the fastest of `repeats` runs: (seconds, output, CUDA peak MiB or None)."""
    import torch

    run()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best, out = float("inf"), None
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        out = run()
        _sync(device)
        best = min(best, time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return best, out, peak


def reference_pipeline(components, settings) -> Callable:
    """diffusers' stock pipeline on the components, with the scheduler EchoMod uses."""
    from diffusers import StableDiffusionControlNetPipeline

    from echobench.echoalign.diffusion import scheduler_class

    scheduler = scheduler_class(settings.scheduler).from_config(components.scheduler.config)
    pipe = StableDiffusionControlNetPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet, controlnet=components.controlnet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_engines(*, config: str = "tiny", random_init: bool = True, engines: tuple[str, ...] = ("eager",),
                  batch_sizes: tuple[int, ...] = (2,), resolution: int | None = None, steps: int = 20,
                  repeats: int = 1, device: str = "cpu", seed: int = 0, vae: str = "",
                  progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the bench (module docstring). Each engine is built once per batch size (the compiled and
    exported engines are built for fixed step shapes); its build time is reported. `progress`, if
    given, is called with the document so far (`"complete": False`) after every row and batch size,
    so that a run cut short by a time limit still leaves what it measured. `vae`: an approximate tiny
    decoder for every row, the reference included (`DiffusionConfig.vae`)."""
    import torch
    from PIL import Image

    from echobench.engines.base import unfuse_qkv_projections
    from echobench.engines.step_shapes import StepShapes

    from echobench.echoalign.diffusion import (DiffusionConfig, DiffusionEchoMod, control_images, make_engine, prompt_for,
                                               require_runtime)
    from echobench.echoalign.diffusion_configs import build_components, default_resolution, load_tiny_vae
    from echobench.environment import environment

    dev = torch.device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    resolution = resolution or default_resolution(config)
    settings = DiffusionConfig(resolution=resolution, steps=steps, vae=vae)  # checked before the model is built
    components = build_components(config, random_init=random_init, device=device, dtype=dtype)
    if vae:
        components.vae = load_tiny_vae(vae, device, dtype)
    class_names = [f"class {i}" for i in range(10)]
    rng = np.random.default_rng(seed)
    doc: dict[str, Any] = {
        "config": config, "random_init": random_init, "resolution": resolution, "steps": steps,
        "guidance_scale": settings.guidance_scale, "scheduler": settings.scheduler, "vae": vae or "checkpoint's",
        "device": device,
        "dtype": str(dtype).removeprefix("torch."), "repeats": repeats, "rows": {},
        "environment": environment(device), "complete": False,
    }
    inputs = {}
    for bs in batch_sizes:
        images = rng.integers(0, 256, (bs, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, len(class_names), bs)
        seeds = rng.integers(0, 2**62, bs)
        inputs[bs] = (images, labels, seeds)

    pipe = reference_pipeline(components, settings)
    reference_pixels: dict[int, np.ndarray] = {}
    rows: dict[str, dict] = {REFERENCE: {}}
    doc["rows"] = rows

    def report(name: str, bs: int | None = None) -> None:
        entry = rows[name] if bs is None else rows[name].get(str(bs), {})
        what = next((f"{k}: {entry[k]}" for k in ("unavailable", "unsupported", "error") if k in entry), None)
        what = what or f"{entry.get('images_per_s')} images/s, parity {entry.get('parity_max_abs', '-')}"
        print(f"bench engines: {name}{'' if bs is None else f' batch {bs}'}: {what}", file=sys.stderr, flush=True)
        if progress is not None:
            doc["speedup_vs_reference"] = _speedups(rows)
            progress(doc)

    for bs, (images, labels, seeds) in inputs.items():
        control = control_images(images, resolution, settings.canny_low, settings.canny_high)
        pil = [Image.fromarray((c.transpose(1, 2, 0) * 255).round().astype(np.uint8)) for c in control]
        prompts = [prompt_for(settings.prompt_template, class_names[y]) for y in labels]

        def run_reference():
            gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
            return pipe(prompts, image=pil, num_inference_steps=steps, guidance_scale=settings.guidance_scale,
                        controlnet_conditioning_scale=settings.controlnet_conditioning_scale, generator=gens,
                        output_type="np").images

        rows[REFERENCE][str(bs)] = _measure(run_reference, dev, repeats, bs, steps, None)
        if "pixels" in rows[REFERENCE][str(bs)]:
            reference_pixels[bs] = rows[REFERENCE][str(bs)].pop("pixels")
        report(REFERENCE, bs)
    for name in engines:
        rows[name] = {}
        engine_name, options = parse_row(name)
        try:
            require_runtime(engine_name, device)
        except EchobenchError as exc:  # runtime missing: say so, go on
            rows[name] = {"unavailable": str(exc)}
            report(name)
            continue
        for bs, (images, labels, seeds) in inputs.items():
            try:
                # Rows share the modules, and engines convert them in place (channels_last, fused
                # attention projections): every row starts from the modules the reference row ran with.
                for module in (components.unet, components.controlnet, components.vae):
                    module.to(memory_format=torch.contiguous_format)
                unfuse_qkv_projections(components)
                shapes = StepShapes.for_components(components, resolution, bs, settings.guidance_scale > 1)
                built = time.perf_counter()
                engine = make_engine(engine_name, device, "auto", shapes=shapes, options=options)
                echomod = DiffusionEchoMod(class_names, 32, components, engine,
                                           dataclasses.replace(settings, batch_size=bs), device=device)
                build_s = time.perf_counter() - built
            except Exception as exc:  # noqa: BLE001 - recorded in the row; the other rows still run
                rows[name][str(bs)] = _failure(exc, device)
                report(name, bs)
                continue
            result = _measure(lambda: echomod.generate_pixels(images, labels, seeds), dev, repeats, bs, steps,
                              reference_pixels.get(bs))
            result.pop("pixels", None)
            # construct_s includes `load`, where the compile engine compiles (its compile_seconds) and
            # the ONNX/TensorRT engines export and build
            result["build"] = {"construct_s": round(build_s, 3), **_jsonable(getattr(engine, "build_info", {}))}
            rows[name][str(bs)] = result
            echomod.close()
            _forget_compiled()
            report(name, bs)
    doc["speedup_vs_reference"] = _speedups(rows)
    doc["complete"] = True
    if progress is not None:
        progress(doc)
    return doc


def _forget_compiled() -> None:
    """After a row: what is left of its compiled code (dynamo's caches of the library code it traced)
    goes, so that no later row finds it."""
    import sys

    gc.collect()
    if "torch._dynamo" in sys.modules:
        sys.modules["torch._dynamo"].reset()


def parse_row(spec: str) -> tuple[str, dict[str, str]]:
    """'compile[compile_vae=true,mode=max-autotune]' → ('compile', {'compile_vae': 'true', 'mode': 'max-autotune'}):
    one engine with some of its options (`echobench ls engines`) set, as one row of the bench."""
    name, bracket, rest = spec.partition("[")
    if not bracket:
        return spec, {}
    if not rest.endswith("]") or not name:
        raise EchobenchError(f"engine row {spec!r}: write NAME or NAME[option=value,...], e.g. compile[compile_vae=true]")
    options = {}
    for item in filter(None, rest[:-1].split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise EchobenchError(f"engine row {spec!r}: {item!r} is not option=value")
        options[key.strip()] = value.strip()
    return name, options


def check_rows(engines: tuple[str, ...], device: str) -> None:
    """Every row's options exist and have valid values (EchobenchError otherwise), before the model
    is built; unknown engine names are left to the bench, which reports them as unavailable rows."""
    from echobench.echoalign.diffusion import engine_settings
    from echobench.echoalign.echomod import is_diffusion_engine

    for spec in engines:
        name, options = parse_row(spec)
        if options and is_diffusion_engine(name):
            try:
                engine_settings(name, device, "auto", options)
            except EchobenchError as exc:
                raise EchobenchError(f"engine row {spec!r}: {exc}") from None


def _measure(run, device, repeats: int, batch: int, steps: int, reference: np.ndarray | None) -> dict[str, Any]:
    try:
        seconds, pixels, cuda_peak = _time(run, device, repeats)
    except Exception as exc:  # noqa: BLE001 - recorded in the row; the other rows still run
        return _failure(exc, device)
    out = {"seconds": round(seconds, 4), "images_per_s": round(batch / seconds, 3),
           "seconds_per_image": round(seconds / batch, 4), "seconds_per_step": round(seconds / steps, 4),
           "peak_mib": round(cuda_peak if cuda_peak is not None else _peak_rss_mib(), 1),
           "peak_kind": "cuda max_memory_allocated" if cuda_peak is not None else "process peak RSS",
           "pixels": np.asarray(pixels, dtype=np.float32)}
    if reference is not None:
        out["parity_max_abs"] = float(np.abs(out["pixels"] - reference).max())
    return out


def _failure(exc: Exception, device) -> dict[str, str]:
    """A row that could not be measured. Out of memory, or a batch size outside what an engine was
    built for (an EchobenchError), makes the batch size "unsupported"; any other exception is an
    "error" of the engine, its traceback printed to stderr. Either way the bench goes on."""
    import torch

    message = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    if isinstance(exc, EchobenchError) or _is_oom(exc):
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
        return {"unsupported": message}
    traceback.print_exc(file=sys.stderr)
    return {"error": message}


def failed_rows(doc: dict[str, Any]) -> list[str]:
    """'row batch: message' for every row and batch size that failed with an error."""
    return [f"{name} {bs}: {r['error']}" for name, per_batch in doc["rows"].items()
            for bs, r in per_batch.items() if isinstance(r, dict) and "error" in r]


def _jsonable(info: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in dict(info).items()}


def _speedups(rows: dict[str, dict]) -> dict[str, dict[str, float]]:
    ref = rows.get(REFERENCE, {})
    out: dict[str, dict[str, float]] = {}
    for name, per_batch in rows.items():
        if name == REFERENCE or "unavailable" in per_batch:
            continue
        for bs, r in per_batch.items():
            if "seconds" in r and "seconds" in ref.get(bs, {}):
                out.setdefault(name, {})[bs] = round(ref[bs]["seconds"] / r["seconds"], 3)
    return out


def format_bench_engines(doc: dict[str, Any]) -> str:
    from tabulate import tabulate

    table = []
    for name, per_batch in doc["rows"].items():
        if "unavailable" in per_batch:
            table.append([name, "-", "unavailable", "", "", "", "", per_batch["unavailable"][:80]])
            continue
        for bs, r in per_batch.items():
            if "unsupported" in r or "error" in r:
                kind = "unsupported" if "unsupported" in r else "error"
                table.append([name, bs, kind, "", "", "", "", r[kind][:80]])
                continue
            speed = doc["speedup_vs_reference"].get(name, {}).get(bs)
            table.append([name, bs, r["images_per_s"], r["seconds_per_step"], r["peak_mib"],
                          "" if "parity_max_abs" not in r else f"{r['parity_max_abs']:.1e}",
                          "1.00×" if name == REFERENCE else (f"{speed:.2f}×" if speed else ""), ""])
    return "\n".join([
        f"EchoMod engines: config {doc['config']} ({'random init' if doc['random_init'] else 'weights'}), "
        f"{doc['resolution']}², {doc['steps']} steps, CFG {doc['guidance_scale']}, {doc['scheduler']}, "
        f"{doc['device']} {doc['dtype']}, best of {doc['repeats']}"
        + ("" if doc.get("vae", "checkpoint's") == "checkpoint's" else f", approximate tiny VAE {doc['vae']}"),
        tabulate(table, headers=["row", "batch", "images/s", "s/step", "peak MiB", "max |Δpixel|", "vs stock", "note"],
                 tablefmt="github"),
        f"reference row: {REFERENCE} = diffusers StableDiffusionControlNetPipeline, timed in the same run on the same inputs",
    ])
