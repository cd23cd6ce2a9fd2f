"""The built-in timm integration (registered only when timm is installed; see :mod:`.plugin`)."""
