"""Task-conditioned hypernetworks: generators of target weights, functional targets, the output regularizer."""

from .hypernetwork import ChunkedHyperNetwork, FullHyperNetwork, HyperNetwork, build
from .regularizer import OutputRegularizer, optimizer_lookahead
from .target import TargetNetwork

__all__ = ["ChunkedHyperNetwork", "FullHyperNetwork", "HyperNetwork", "OutputRegularizer", "TargetNetwork", "build",
           "optimizer_lookahead"]
