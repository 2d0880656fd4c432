"""The ONNX Runtime engine: the fused ControlNet + UNet step exported to ONNX and run by onnxruntime.

`config.OnnxRuntimeConfig` is its entry in the engine registry and its options (imports nothing
heavy); `engine.OnnxRuntimeEngine` imports torch and is imported when an engine is built;
onnxruntime itself is imported when the engine loads (or its cache key asks which providers exist).
"""
