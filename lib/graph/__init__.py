"""Periodic multi-edge graph builders (registered in ``GRAPHS``)."""
from e3relax.graph.base import GraphBuilder, GraphEdges

__all__ = ["GraphBuilder", "GraphEdges"]
