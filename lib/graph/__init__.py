"""Periodic multi-edge graph builders (registered in ``GRAPHS``)."""
from e3relax.graph.base import GraphBuilder, GraphEdges
from e3relax.graph.periodic import PeriodicMultiEdgeGraph, build_graph

__all__ = ["GraphBuilder", "GraphEdges", "PeriodicMultiEdgeGraph", "build_graph"]
