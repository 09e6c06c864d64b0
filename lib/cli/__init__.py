"""The ``e3relax`` command line."""
