"""Reaction videos decoded: probing, sampling by presentation time, shards, rotation, broken files.

Every video is encoded here with PyAV (tests/videogen.py), each frame stamped with its number, so
a test reads back which frame a sample holds."""

from __future__ import annotations

import io
import math
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from facesense.errors import BadRequest, ConfigError
from facesense.inputs.video import frames
from facesense.inputs.video.frames import sample, shard_ranges
from facesense.inputs.video.limits import VideoLimits, check_fps, is_video, job_fields
from facesense.inputs.video.probe import VideoError, VideoInfo, probe
from facesense.settings import Settings
from tests import videogen as gen
from tests.videogen import read_stamp

LIMITS = VideoLimits()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """The module's videos, encoded once: name -> path (and the VFR one's frame times)."""
    root = tmp_path_factory.mktemp("videos")
    vfr_times = gen.variable(4.0, seed=3)
    made = {
        "mp4": gen.write_video(root / "steady.mp4", gen.steady(4.0), audio=True),
        "webm": gen.write_video(root / "steady.webm", gen.steady(4.0)),
        "vfr": gen.write_video(root / "phone.mov", vfr_times),
        "rot": gen.write_video(root / "portrait.mp4", gen.steady(1.0), rotation=-90),
        "long": gen.write_video(root / "long.mkv", gen.steady(12.0)),
        "whole_webm": gen.write_video(root / "whole.webm", gen.steady(6.0)),
        "whole_mp4": gen.write_video(root / "whole.mp4", gen.steady(6.0), faststart=True),
        "moov_last": gen.write_video(root / "moov_last.mp4", gen.steady(2.0)),
    }
    made["cut_webm"] = gen.truncated(root / "cut.webm", made["whole_webm"])
    made["cut_mp4"] = gen.truncated(root / "cut.mp4", made["whole_mp4"])
    made["cut_moov_last"] = gen.truncated(root / "cut_moov_last.mp4", made["moov_last"])
    made["vfr_times"] = vfr_times
    return made


def samples_of(path, fps, k0=0, k1=None, info=None):
    """[(frame, t, stamp, size)] of one pass, and the VideoError it ended with (or None)."""
    info = info or probe(path, LIMITS)
    got, error = [], None
    try:
        for s in sample(path, info, fps, k0, k1):
            got.append((s.frame, s.t, read_stamp(s.image), s.image.size))
    except VideoError as e:
        error = e
    return got, error


def test_video_names_are_told_by_extension_in_any_case():
    assert all(is_video(n) for n in ("a.mp4", "b.M4V", "c.mov", "d.webm", "e.MKV", "f.avi"))
    assert not any(is_video(n) for n in ("a.jpg", "mp4", "b.mp4.txt", "c.gif"))


@pytest.mark.parametrize(("name", "codec", "seconds"), [("mp4", "h264", 4.0), ("webm", "vp9", 4.0)])
def test_probe_reads_length_size_codec_and_rate_from_the_container(videos, name, codec, seconds):
    info = probe(videos[name], LIMITS)
    assert (info.width, info.height, info.rotation, info.codec) == (320, 240, 0, codec)
    assert abs(info.duration - seconds) < 1 / 30 and abs(info.rate - 30) < 0.1
    assert info.start == 0.0


@pytest.mark.parametrize("name", ["mp4", "webm"])
@pytest.mark.parametrize("fps", [5, 30, 2.5])
def test_samples_are_evenly_spaced_and_each_holds_the_frame_nearest_its_time(videos, name, fps):
    info = probe(videos[name], LIMITS)
    got, error = samples_of(videos[name], fps)
    assert error is None
    assert len(got) == info.samples(fps) == math.ceil(info.duration * fps - 1e-6)
    assert [g[0] for g in got] == list(range(len(got)))
    assert [g[1] for g in got] == [round(k / fps, 3) for k in range(len(got))]
    # 30 frames a second, frame i at i / 30: sample k holds frame round(30 k / fps), the last
    # frame once the video has no later one.
    assert [g[2] for g in got] == [min(round(30 * k / fps), 119) for k in range(len(got))]
    assert {g[3] for g in got} == {(320, 240)}


@pytest.mark.parametrize("fps", [5, 10, 30])
def test_a_variable_frame_rate_video_gives_evenly_spaced_samples_of_the_nearest_frames(videos, fps):
    times = videos["vfr_times"]
    got, error = samples_of(videos["vfr"], fps)
    assert error is None and len(got) == probe(videos["vfr"], LIMITS).samples(fps)
    gaps = np.diff([g[1] for g in got])
    assert np.allclose(gaps, 1 / fps, atol=0.0011)  # t is rounded to the millisecond
    for _, t, stamp, _ in got:
        nearest = min(abs(x - t) for x in times)
        assert abs(times[stamp] - t) <= nearest + 0.001, (t, stamp)
    # Frames come 10 to 90 ms apart: every Nth frame would not be evenly spaced in time.
    every_nth = np.diff(times[:: max(1, round(len(times) / times[-1] / fps))])
    assert every_nth.max() - every_nth.min() > 0.05


def test_rotation_metadata_turns_a_phone_video_upright(videos):
    info = probe(videos["rot"], LIMITS)
    assert (info.width, info.height, info.rotation) == (240, 320, 270)
    second = list(sample(videos["rot"], info, 5))[1]  # frame 6
    assert second.image.size == (240, 320)
    upright = np.asarray(second.image, dtype=float)
    # -90 in the display matrix: shown turned a quarter clockwise, as a phone held upright.
    encoded = gen.stamp(gen.face_photo((320, 240)), 6)
    clockwise, counter = np.rot90(encoded, k=-1), np.rot90(encoded, k=1)
    assert np.abs(upright - clockwise).mean() < 8 < np.abs(upright - counter).mean()
    assert read_stamp(second.image.transpose(Image.Transpose.ROTATE_90)) == 6


def test_shard_ranges_cut_a_video_into_back_to_back_ranges():
    info = probe_info(duration=95.0)
    ranges = shard_ranges(info, 5, 30)
    assert ranges == [(0, 150), (150, 300), (300, 450), (450, 475)]
    assert shard_ranges(info, 30, 30)[-1] == (2700, 2850)
    assert shard_ranges(probe_info(duration=10.0), 5, 30) == [(0, 50)]


def probe_info(duration: float):
    """A VideoInfo as probe would give for a video of this length."""
    return VideoInfo(duration, 640, 480, 0, 30.0, "h264", 0.0)


@pytest.mark.parametrize("name", ["long", "webm", "vfr"])
@pytest.mark.parametrize("fps", [5, 30])
def test_shards_together_give_every_sample_once_as_one_pass_does(videos, name, fps):
    info = probe(videos[name], LIMITS)
    whole, error = samples_of(videos[name], fps, info=info)
    assert error is None
    parts = []
    for k0, k1 in shard_ranges(info, fps, 1.5):
        got, error = samples_of(videos[name], fps, k0, k1, info=info)
        assert error is None and [g[0] for g in got] == list(range(k0, k1))
        parts += got
    assert parts == whole


@contextmanager
def counting_decodes(monkeypatch):
    """Count the frames the sampler decodes (a wrapper around its opened())."""
    counted = {"frames": 0}
    real = frames.opened

    class Counting:
        def __init__(self, container):
            self.container = container

        def decode(self, stream):
            for frame in self.container.decode(stream):
                counted["frames"] += 1
                yield frame

        def __getattr__(self, name):
            return getattr(self.container, name)

    @contextmanager
    def opened(src):
        with real(src) as (container, stream):
            yield Counting(container), stream

    monkeypatch.setattr(frames, "opened", opened)
    yield counted


def test_a_late_shard_seeks_to_its_keyframe_instead_of_decoding_from_the_start(videos, monkeypatch):
    info = probe(videos["long"], LIMITS)  # 12 s at 30 fps, a keyframe each second
    with counting_decodes(monkeypatch) as counted:
        got, _ = samples_of(videos["long"], 5, 55, 60, info=info)  # 11.0 s to 11.8 s
    assert [g[2] for g in got] == [330, 336, 342, 348, 354]
    # From the keyframe at 10 s (the seek aims 0.5 s before the previous sample): ~2 s decoded.
    assert 50 <= counted["frames"] <= 70 < 360


@pytest.mark.parametrize("name", ["cut_webm", "cut_mp4"])
def test_a_truncated_video_keeps_its_frames_and_names_the_time_it_ends(videos, name):
    info = probe(videos[name], LIMITS)
    assert info.duration > 5.9  # the header still declares 6 s
    got, error = samples_of(videos[name], 5, info=info)
    assert error is not None and "truncated" in str(error) and "6.0" in str(error)
    assert 1.5 < error.at < 4.5
    assert got and [g[0] for g in got] == list(range(len(got)))
    assert got[-1][1] < error.at <= got[-1][1] + 0.2 + 1 / 30
    # Shards: exactly one raises, the one holding the first missing sample; together they
    # give the one pass's samples.
    parts, errors = [], []
    for k0, k1 in shard_ranges(info, 5, 1.0):
        part, e = samples_of(videos[name], 5, k0, k1, info=info)
        parts += part
        errors += [(k0, k1, e.at)] if e else []
    assert parts == got
    assert len(errors) == 1 and errors[0][0] <= len(got) < errors[0][1]
    assert errors[0][2] == error.at


def test_a_video_read_from_a_file_object_samples_as_from_a_path(videos):
    data = videos["webm"].read_bytes()
    info = probe(io.BytesIO(data), LIMITS)
    got = [(s.frame, read_stamp(s.image)) for s in sample(io.BytesIO(data), info, 5)]
    assert got == [(g[0], g[2]) for g in samples_of(videos["webm"], 5)[0]]


def written(path, data: bytes):
    """path, holding data."""
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("make", "says"), [
    (lambda d: written(d / "empty.mp4", b""), "the file is empty"),
    (lambda d: written(d / "notes.mp4", b"not a video\n"), "not a readable video"),
    (lambda d: gen.tiny(d / "tiny.avi"), "frames of 1x1 are smaller than 16 px a side"),
    (lambda d: gen.huge_frame(d / "huge.avi"),
     "frames of 16000x16000 are larger than 4096 px a side (FACESENSE_VIDEO_MAX_SIDE)"),
    (lambda d: gen.write_video(d / "long.mp4", [0.0, 4000.0]),
     "the video is 4000.0 s long, longer than 3600 s (FACESENSE_VIDEO_MAX_SECONDS)"),
    (lambda d: gen.audio_only(d / "sound.mp4"), "no video track (audio only)"),
])
def test_hostile_files_are_refused_with_a_clear_reason(tmp_path, make, says):
    with pytest.raises(VideoError) as info:
        probe(make(tmp_path), LIMITS)
    assert says in str(info.value)


def test_a_video_in_s3_is_read_by_ranges_a_late_shard_never_reading_it_whole(videos, s3_endpoint,
                                                                           unique):
    from facesense.inputs.video.reader import RangedReader, open_video
    from facesense.storage import open_store
    from tests.conftest import BUCKET

    store = open_store(f"s3://{BUCKET}/videos-{unique}", endpoint_url=s3_endpoint)
    data = videos["long"].read_bytes()  # 12 s, moov (the index) at the end
    store.put("viewer.mkv", data)
    with open_video(store, "viewer.mkv") as f:
        assert isinstance(f, RangedReader) and f.size == len(data)
        info = probe(f, LIMITS)
    with open_video(store, "viewer.mkv") as f:
        got = [(s.frame, read_stamp(s.image)) for s in sample(f, info, 5, 55, 60)]
        assert got == [(55, 330), (56, 336), (57, 342), (58, 348), (59, 354)]
        assert f.opens <= 6  # the header, the index, the seek: a few ranged GETs
        assert f.read_bytes < len(data) / 2  # 11 s to 11.8 s of 12 s: not the whole object


def test_an_empty_reader_is_refused_as_an_empty_file():
    with pytest.raises(VideoError, match="the file is empty"):
        probe(io.BytesIO(b""), LIMITS)


def test_a_truncated_mp4_without_its_index_cannot_be_opened(videos):
    with pytest.raises(VideoError, match="not a readable video"):
        probe(videos["cut_moov_last"], LIMITS)


def test_limits_come_from_the_settings_and_bad_ones_are_refused():
    settings = Settings.from_env({"FACESENSE_VIDEO_MAX_SECONDS": "60", "FACESENSE_VIDEO_FPS": "2.5"})
    limits = VideoLimits.from_settings(settings)
    assert (limits.max_seconds, limits.fps, limits.max_fps, limits.shard_seconds) == (60, 2.5, 30, 30)
    for variable, value in [("FACESENSE_VIDEO_FPS", "0"), ("FACESENSE_VIDEO_MAX_SIDE", "8"),
                            ("FACESENSE_VIDEO_SHARD_SECONDS", "-1"), ("FACESENSE_VIDEO_MAX_FPS", "x")]:
        with pytest.raises(ConfigError, match=variable):
            Settings.from_env({variable: value})


def test_a_short_limit_refuses_a_longer_video(videos):
    with pytest.raises(VideoError, match="longer than 2 s"):
        probe(videos["mp4"], VideoLimits(max_seconds=2))


@pytest.mark.parametrize("fps", [0, -1, 31, "5", True, float("nan")])
def test_video_fps_outside_the_cap_is_refused(fps):
    with pytest.raises(ValueError, match="at most 30"):
        check_fps(fps, LIMITS)
    assert check_fps(30, LIMITS) == 30.0 and check_fps(0.5, LIMITS) == 0.5


@pytest.mark.parametrize(("body", "fields"), [
    ({}, {}), ({"video_fps": None}, {}), ({"video_fps": 10}, {"video_fps": 10.0}),
    ({"video_fps": "2.5"}, {"video_fps": 2.5}),
])
def test_a_jobs_video_fps_is_recorded_as_a_number(body, fields):
    assert job_fields(body, LIMITS) == fields


@pytest.mark.parametrize("raw", ["fast", "0", 60, [5], True])
def test_a_bad_video_fps_is_a_400_naming_the_field_and_the_cap(raw):
    with pytest.raises(BadRequest, match=r"video_fps must be a number above 0 and at most 30"):
        job_fields({"video_fps": raw}, LIMITS)
