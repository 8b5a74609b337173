"""The package version: one place, below every module that reports it (files, --version)."""

__version__ = "0.2.0"
