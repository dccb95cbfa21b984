"""calibflow: efficiency and data/MC correction tables from calibration samples."""

__version__ = "0.1.0"
