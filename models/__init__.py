"""Registered architectures. Each model module is imported here explicitly so it registers."""
