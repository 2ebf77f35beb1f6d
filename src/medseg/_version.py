"""The package version, in a leaf module so that medseg modules never import the package itself."""

__version__ = "0.1.0"
