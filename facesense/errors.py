"""The error hierarchy. HTTP codes are chosen only in api/; workers retry only TransientError."""


class FacesenseError(Exception):
    """Base class for every error FaceSense raises on purpose."""

    code = "error"


class ConfigError(FacesenseError):
    """A setting is missing or malformed."""

    code = "bad_config"


class BadRequest(FacesenseError):
    """The request is malformed: wrong fields, wrong types, bad values."""

    code = "bad_request"


class NotFound(FacesenseError):
    """A job, model version, alias or stored object does not exist."""

    code = "not_found"


class JobNotFound(NotFound):
    """No job has this id."""

    code = "job_not_found"


class ModelNotFound(NotFound):
    """No model version or alias has this name."""

    code = "model_not_found"


class ObjectNotFound(NotFound):
    """No stored object has this key."""

    code = "object_not_found"


class SourceError(FacesenseError):
    """A job's source can't be used: outside the allowed roots, missing, empty, unsupported."""

    code = "unusable_source"


class PayloadTooLarge(FacesenseError):
    """An upload or archive exceeds a configured limit."""

    code = "too_large"


class Conflict(FacesenseError):
    """The request clashes with the current state (results not ready, version exists)."""

    code = "conflict"


class ModelError(FacesenseError):
    """A model version is unusable: checksum mismatch, wrong tensors, bad manifest."""

    code = "bad_model"


class TransientError(FacesenseError):
    """A dependency (storage, Redis) failed in a way that may pass: retry with backoff."""

    code = "unavailable"


class TrainingDiverged(FacesenseError):
    """A training run's loss stopped being a finite number: more epochs would not help."""

    code = "diverged"


def backoff(attempt: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after failed attempt n (1-based): base, 2x base, 4x base ... up to cap.
    The one retry schedule: worker steps and webhook deliveries both wait by it."""
    return min(cap_s, base_s * 2 ** (attempt - 1))
