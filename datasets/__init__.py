"""Datasets: safe LMDB format (reader/writer), importers for published layouts, generator."""
