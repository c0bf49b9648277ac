"""The result row schema: what one scored image (or face) becomes in results.jsonl, the CSV
and the API, and the row of one that could not be scored.

A row is image, group, (t, frame in a job with videos), (face, box, face_score with faces on),
label, confidence, probs, error, in that order. In a job with videos every row has t and frame,
a photo's null, so all its rows have the same fields; a photo-only job's rows have neither, as
they always had (results.jsonl of such a job is unchanged).
Probabilities come as a NumPy array from the model; the core imports no NumPy,
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


def with_time(row: dict) -> dict:
    """A row of a job with videos: a photo's gets t and frame null after its group."""
    if "t" in row:
        return row
    return {"image": row["image"], "group": row["group"], "t": None, "frame": None,
            **{k: v for k, v in row.items() if k not in ("image", "group")}}
