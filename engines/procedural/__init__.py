"""The procedural EchoMod engine: an OpenCV re-renderer for the embedded `shapes` world (no download).

`config.ProceduralConfig` is its entry in the engine registry (`echobench.engines.registry.ENGINES`)
and its options; `engine.make_modifier` builds the generator.
"""
