"""openflash's version, in one place (the package and its lower layers read it here)."""

__version__ = "0.1.0"
