"""The TensorRT engine: a TensorRT plan built from the fused ControlNet + UNet ONNX graph.

`config.TensorRTConfig` (its entry in the engine registry and its options) and the plan-cache logic
import nothing heavy and are testable without TensorRT; `engine.TensorRTEngine` imports torch and is
imported when an engine is built; tensorrt itself is imported when the engine loads.
"""
