"""The optimization loop: InputOptimization, stop criteria and hooks."""
from .hooks import ModuleOutputsHook, StopForward, model_frozen, run_to_targets
from .input_optimization import InputOptimization
from .stop_criteria import n_steps, plateau, target_value, StopCriteria

__all__ = [
    "InputOptimization",
    "n_steps",
    "plateau",
    "target_value",
    "StopCriteria",
    "ModuleOutputsHook",
    "StopForward",
    "model_frozen",
    "run_to_targets",
]
