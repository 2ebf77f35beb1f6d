"""Readers and writers by file kind: images and masks (``images``), atomic writes (``files``)."""
