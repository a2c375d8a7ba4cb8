"""lsnn.reference: the PyTorch reference: the ai.lsnn operators' executable
definition (:func:`alif`, :func:`li`), the models, the tasks and training.

Names are imported on first use, so that the torch-free modules of this
package (:mod:`.errors`, :mod:`.files`) serve the runtime path without
loading PyTorch."""
from __future__ import annotations

import importlib

_WHERE = {
    "functional": ["alif", "alif_step", "li", "ALIFState", "ALIFParams", "ALIFOutput", "LIOutput", "SpecError"],
    "modules": ["LSNN", "LIFNet", "LSTMNet", "GRUNet", "RecurrentNet", "LSNNConfig", "LSTMConfig", "RecurrentConfig",
                "NetOutput", "build_model", "MODELS"],
    "layers": ["ALIF", "LI", "ALIFConfig", "LIConfig"],
    "regularizers": ["firing_rate_loss", "firing_rates_hz"],
    "surrogate": ["spike", "heaviside", "pseudo_derivative"],
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}
__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'lsnn.reference' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value
