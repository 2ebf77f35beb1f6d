"""From files on disk to training samples.

``layouts`` finds image/mask pairs (folders, ISIC names, manifest.csv), ``check`` opens every pair and
reports what is wrong with it, ``splits`` assigns train/val/test. Import the submodules directly;
this package imports nothing heavy.
"""
