"""The eager engine: the diffusers ControlNet and UNet called directly (the reference engine).

`config.EagerConfig` is its entry in the engine registry and its options (imports nothing heavy);
`engine.EagerEngine` imports torch and is imported when an engine is built.
"""
