"""StemBridge: split DAW bounces into sample-aligned stems and hand them back to the DAW."""

__version__ = "0.1.0"
