"""The compile engine: the fused ControlNet + UNet step through `torch.compile`.

`config.CompileConfig` is its entry in the engine registry and its options (imports nothing heavy);
`engine.CompileEngine` imports torch and is imported when an engine is built.
"""
