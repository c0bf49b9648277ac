"""FaceSense core: settings, storage, job records, model registry, sources, CLI. No torch here."""

__version__ = "0.1.0"
