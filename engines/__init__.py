"""EchoMod inference engines, one folder each, behind the interface in `engines/base.py`.

`eager/` (diffusers modules, the reference), `compile/` (torch.compile), `onnxruntime/` and
`tensorrt/` compute the same denoising step; `procedural/` is the OpenCV generator for `shapes`.
Shared by the diffusion engines: `options.py` (dtypes, devices, missing-runtime errors), `shapes.py`
(the step's input shapes and batch bounds), `fused.py` (ControlNet + UNet as one torch module) and
`export.py` (that module as a cached ONNX graph).
"""
