"""The result row schema: what one scored image (or face) becomes in results.jsonl, the CSV
and the API, and the row of one that could not be scored.

A row is image, group, (face, box, face_score with faces on), label, confidence, probs, error,
in that order. Probabilities come as a NumPy array from the model; the core imports no NumPy,
so they are read through argmax and indexing only.
"""

from __future__ import annotations

from facesense.inputs.keys import group_of

FACE_FIELDS = ("face", "box", "face_score")


def label_fields(probs, classes: list[str]) -> dict:
    """A scored row's label, confidence, probabilities (6 decimals) and (no) error."""
    best = int(probs.argmax())
    return {"label": classes[best], "confidence": round(float(probs[best]), 6),
            "probs": {c: round(float(x), 6) for c, x in zip(classes, probs, strict=True)},
            "error": None}


def scored_row(key: str, probs, classes: list[str], **face) -> dict:
    """An image's scored row; with face, box and face_score given, one face's."""
    return {"image": key, "group": group_of(key), **face, **label_fields(probs, classes)}


def error_row(key: str, reason: str | None, faces: bool = False) -> dict:
    """The row of an image that could not be scored (with faces on: or had no face, reason None)."""
    where = dict.fromkeys(FACE_FIELDS) if faces else {}
    return {"image": key, "group": group_of(key), **where, "label": None, "confidence": None,
            "probs": None, "error": reason}
