"""EchoAlign: EchoMod (generator contract, cache of modified images, diffusion models and their
training), EchoSelect (features, similarity, the selection rule) and the EchoAlign methods.

Reaches the engines only through `echobench.engines.base` and the engine registry."""
