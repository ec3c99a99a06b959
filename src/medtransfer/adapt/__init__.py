"""Adapt: train backbones (full fine-tuning, linear probe, BitFit, LN-tuning, peft methods) on probe's tasks."""

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.methods import METHODS, AdaptMethod, get_method, method_table, register_method
from medtransfer.adapt.run import run_adapt

__all__ = ["METHODS", "AdaptConfig", "AdaptMethod", "get_method", "method_table", "register_method", "run_adapt"]
