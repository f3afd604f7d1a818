from anchor_ot.version import __version__
