"""fibergrade: grade animal fibre and lamb carcasses from instrument data."""

__version__ = "0.1.0"
