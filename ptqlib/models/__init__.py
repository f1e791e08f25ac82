"""The models: the architectures (`zoo`), their training (`training`, `dpsgd`) and the non-quantization
degradations used as controls (`degrade`)."""
from ptqlib.models.zoo import Unit, build_model, quantizable_layers, reconstruction_units

__all__ = ["Unit", "build_model", "quantizable_layers", "reconstruction_units"]
