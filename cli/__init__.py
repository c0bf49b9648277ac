"""The command line: the `facesense` CLI, the `facesense up` launcher, the demo.

The top layer: the only one allowed to import every other (core, runtime, worker, trainer, api).
"""
