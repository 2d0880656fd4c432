"""Training: classifier networks, named protocols, the trainer and `Task`, the `Method` interface.

Imports only `echobench.data` and the foundation modules (errors, registry, seeding)."""
