"""Multitask gradient methods at the last shared activation (docs/multitask.md).

    from ops.multitask import combine_gradients, build_combiner, METHODS, GradientLayer
"""
from .layer import GradientLayer, gradient_stats
from .methods import METHODS, Combiner, MultitaskError, build_combiner, combine_gradients

__all__ = ["METHODS", "Combiner", "GradientLayer", "MultitaskError", "build_combiner",
           "combine_gradients", "gradient_stats"]
