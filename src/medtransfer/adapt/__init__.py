"""Adapt: train backbones (full fine-tuning, linear probe, BitFit, LN-tuning, peft methods) on probe's tasks."""

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.methods import (
    METHODS,
    AdaptMethod,
    get_method,
    method_table,
    register_method,
    register_peft_method,
)
from medtransfer.adapt.options import MethodOptions, option
from medtransfer.adapt.run import RunOptions, TaskSelection, run_adapt

__all__ = ["METHODS", "AdaptConfig", "AdaptMethod", "MethodOptions", "RunOptions", "TaskSelection", "get_method",
           "method_table", "option", "register_method", "register_peft_method", "run_adapt"]
