"""Vision encoders that turn decoded frames into :class:`~anchor_ot.types.VideoTokens`.

>>> from anchor_ot.encoders import DinoV2Encoder  # doctest: +SKIP
>>> encoded = DinoV2Encoder().encode(frames)       # doctest: +SKIP
>>> encoded.video_tokens.tokens.shape              # doctest: +SKIP
torch.Size([16, 196, 384])
"""

from anchor_ot.encoders.dinov2 import DinoV2Encoder, EncodedVideo, load_dinov2

__all__ = ["DinoV2Encoder", "EncodedVideo", "load_dinov2"]
