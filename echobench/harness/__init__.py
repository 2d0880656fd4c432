"""The harness: suites → cells, the run context, the runner, the results store, the executors."""
