"""EchoMod inference engines, one folder each, behind the interface in `engines/base.py`.

`eager/` (diffusers modules, the reference), `compile/` (torch.compile), `onnxruntime/` and
`tensorrt/` compute the same denoising step; `procedural/` is the OpenCV generator for `shapes`. Each
folder's `config.py` holds the engine's settings, an `options.EngineSettings`: the engine registry's
entry for it (`registry.py`), its options, and its part of EchoMod's cache key.
Shared by the diffusion engines: `options.py` (dtypes, devices, option parsing, missing-runtime
errors), `step_shapes.py` (the step's input shapes and batch bounds), `fused.py` (ControlNet + UNet as
one torch module) and `export.py` (that module as a cached ONNX graph).

Engines import only this interface, `echobench.errors`, `echobench.registry` and `echobench.data`
(the procedural engine re-renders the shapes world), never EchoMod or the harness.
"""
