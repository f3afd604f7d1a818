"""PyAV decoding on the real sample clip and on broken files made on the spot."""

from __future__ import annotations

import wave

import av
import numpy as np
import pytest

from anchor_ot.video import count_frames, load_video, read_frames, sample_indices, sample_video


def _write_video(path, num_frames, size=(48, 64), rate=25, options=None, gop=12):
    """Encode ``num_frames`` flat frames whose colour encodes the frame index in base 12 (R, G, B digits)."""
    container = av.open(str(path), "w", options=options or {})
    stream = container.add_stream("mpeg4", rate=rate)
    stream.height, stream.width = size
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = gop
    container.start_encoding()
    for i in range(num_frames):
        img = np.zeros((*size, 3), np.uint8)
        img[...] = [20 * (i % 12), 20 * (i // 12 % 12), 20 * (i // 144)]
        container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
    container.mux(stream.encode(None))
    container.close()
    return path


@pytest.fixture(scope="module")
def bikes():
    return sample_video("bikes.mp4")


def test_sample_video_found(bikes):
    assert bikes.name == "bikes.mp4" and bikes.is_file()
    with pytest.raises(ValueError, match="unknown sample video"):
        sample_video("nope.mp4")


@pytest.mark.parametrize("total,num", [(250, 16), (250, 32), (10, 3), (7, 7), (1, 1), (100, 1)])
def test_sample_indices_are_segment_centres(total, num):
    idx = sample_indices(total, num)
    seg = total / num
    expected = [int((i + 0.5) * seg) for i in range(num)]
    assert idx.tolist() == expected
    assert idx.dtype == np.int64


def test_sample_indices_more_than_available():
    assert sample_indices(5, 8).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match=">= 1"):
        sample_indices(5, 0)


def test_load_video_uniform_and_resized(bikes):
    v = load_video(bikes, num_frames=16, size=(224, 112))
    assert v.frames.shape == (16, 224, 112, 3) and v.frames.dtype == np.uint8
    assert v.total_frames == 250 and v.fps == pytest.approx(25.0)
    assert v.indices.tolist() == sample_indices(250, 16).tolist()
    np.testing.assert_allclose(v.timestamps, v.indices / 25.0, atol=1e-9)
    assert v.frames.std() > 10  # real content, not a blank buffer


def test_load_video_native_size_matches_full_decode(bikes):
    v = load_video(bikes, num_frames=4)
    assert v.size == (272, 640)
    everything = load_video(bikes, num_frames=250)
    assert everything.indices.tolist() == list(range(250))
    np.testing.assert_array_equal(everything.frames[v.indices], v.frames)


def test_read_frames_between_samples(bikes):
    v = read_frames(bikes, [12, 3, 3, 249], size=64)
    assert v.indices.tolist() == [3, 12, 249]
    assert v.frames.shape == (3, 64, 64, 3)
    ref = load_video(bikes, num_frames=250, size=64)
    np.testing.assert_array_equal(ref.frames[[3, 12, 249]], v.frames)
    with pytest.raises(ValueError, match=r"\[0, 249\]"):
        read_frames(bikes, [250])
    with pytest.raises(ValueError, match="empty"):
        read_frames(bikes, [])


def test_frames_in_written_order(tmp_path):
    path = _write_video(tmp_path / "ramp.avi", 12)
    v = load_video(path, num_frames=12)
    assert _frame_ids(v.frames) == list(range(12))


def _frame_ids(frames):
    digits = np.round(frames.mean(axis=(1, 2)) / 20).astype(int)  # lossy codec: +-9 levels tolerated
    return (digits[:, 0] + 12 * digits[:, 1] + 144 * digits[:, 2]).tolist()


@pytest.mark.parametrize("container", ["avi", "mp4"])
def test_seeking_gives_the_same_frames(tmp_path, monkeypatch, container):
    import anchor_ot.video as video

    path = _write_video(tmp_path / f"long.{container}", 300, size=(32, 32))
    wanted = [0, 5, 100, 101, 180, 299]
    one_pass = read_frames(path, wanted)
    assert _frame_ids(one_pass.frames) == wanted
    monkeypatch.setattr(video, "_SEEK_GAP", 10)  # force seeks over every gap > 10 frames
    sought = read_frames(path, wanted)
    assert _frame_ids(sought.frames) == wanted
    np.testing.assert_array_equal(sought.frames, one_pass.frames)
    np.testing.assert_allclose(sought.timestamps, np.array(wanted) / 25, atol=1e-6)
    sampled = load_video(path, num_frames=7)
    assert _frame_ids(sampled.frames) == sample_indices(300, 7).tolist()


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="not found"):
        load_video("/no/such/video.mp4")


def test_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"this is not a video" * 500)
    with pytest.raises(ValueError, match="cannot read"):
        load_video(path)


def test_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    with pytest.raises(ValueError, match="no video stream"):
        load_video(path)


def test_zero_frames(tmp_path):
    path = _write_video(tmp_path / "empty.avi", 0)
    with pytest.raises(ValueError, match="no frames"):
        load_video(path)
    with pytest.raises(ValueError, match="no frames"):
        read_frames(path, [0])


def test_truncated_file_warns_and_samples_what_is_there(tmp_path):
    full = _write_video(tmp_path / "full.mp4", 20, options={"movflags": "faststart"})
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    readable = count_frames(cut, decode=True)
    assert 0 < readable <= count_frames(cut) < 20
    with pytest.warns(RuntimeWarning, match="promises 20 frames"):
        v = load_video(cut, num_frames=4)
    assert v.total_frames == readable
    assert v.indices.tolist() == sample_indices(readable, 4).tolist()


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)])
def test_bad_num_frames(bikes, bad, exc):
    with pytest.raises(exc, match="num_frames"):
        load_video(bikes, num_frames=bad)


@pytest.mark.parametrize("bad,exc", [((0, 10), ValueError), ((10,), TypeError), ("big", TypeError)])
def test_bad_size(bikes, bad, exc):
    with pytest.raises(exc, match="size"):
        load_video(bikes, num_frames=2, size=bad)
