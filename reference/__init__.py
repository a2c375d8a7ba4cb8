"""lsnn.reference: the PyTorch reference: the ai.lsnn operators' executable
definition (:func:`alif`, :func:`li`), the models, the tasks and training."""
from .functional import ALIFOutput, ALIFParams, ALIFState, LIOutput, SpecError, alif, alif_step, li
from .modules import LIFNet, LSNN, LSNNConfig, LSTMConfig, LSTMNet, NetOutput, build_model
from .regularizers import firing_rate_loss, firing_rates_hz
from .spike import heaviside, pseudo_derivative, spike

__all__ = ["alif", "alif_step", "li", "ALIFState", "ALIFParams", "ALIFOutput", "LIOutput", "SpecError",
           "LSNN", "LIFNet", "LSTMNet", "LSNNConfig", "LSTMConfig", "NetOutput", "build_model",
           "spike", "heaviside", "pseudo_derivative", "firing_rate_loss", "firing_rates_hz"]
