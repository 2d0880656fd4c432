"""The procedural EchoMod engine: an OpenCV re-renderer for the embedded `shapes` world (no download).

`engine.make_modifier` is registered as the `procedural` engine in `echobench.echomod.ENGINES`; its
options are the fields of `config.ProceduralConfig`.
"""
