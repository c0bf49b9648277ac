"""Gallery thumbnails for manifest jobs: folder lines made on demand, URL lines never fetched."""

from __future__ import annotations

import pytest
from PIL import Image

from facesense.errors import NotFound
from facesense.outputs.gallery import GalleryThumbs
from facesense.outputs.thumbnails import sampled, thumb_key, writer_for
from facesense.state.status import new_job_id
from facesense.storage import store_from_settings
from facesense.storage.layout import manifest

URLS = [f"https://images.example/{i}.jpg" for i in range(64)]


def test_a_manifests_workers_keep_a_sample_of_its_url_lines_only(settings):
    store = store_from_settings(settings)
    job_id = new_job_id()
    store.put(manifest(job_id), b'{"manifest": {"columns": [], "base": "file:///"}}\n')
    writer = writer_for(store, job_id, 1)
    local = [f"shop/{i}.jpg" for i in range(64)]
    for key in URLS + local:
        writer.add(key, Image.new("RGB", (64, 48), (200, 90, 40)))
    writer.close()
    kept = [k for k in URLS + local if store.exists(thumb_key(job_id, k))]
    assert kept == [k for k in URLS if sampled(k)] and kept


def test_a_manifests_url_line_is_never_fetched_for_a_thumbnail(settings):
    thumbs = GalleryThumbs(settings, store_from_settings(settings))
    record = {"source": "manifest:jobs/x/inputs/manifest.jsonl"}
    row = {"image": "shop/1.jpg", "error": None}
    assert thumbs.has_thumb(record, row)  # a folder line: made on demand
    assert [thumbs.has_thumb(record, {"image": u, "error": None}) for u in URLS] == [
        sampled(u) for u in URLS]
    # a URL line reaches only the store's sample (none stored here): a 404, no fetch
    assert thumbs._from_source(record["source"], URLS[0]) is None
    with pytest.raises(NotFound):
        thumbs._stored(new_job_id(), URLS[0])
