"""werkhub: a sovereign AI workbench for industrial teams."""

__version__ = "0.1.0"
