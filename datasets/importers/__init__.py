"""Importers, one module per published layout, each registered in ``IMPORTERS``."""
