"""Networks: the conditional VAE (Fig. 6a/b) and the classifier (Fig. 6c)."""
from .classifier import Fig6cCNN
from .cvae import CVAE, Decoder, Encoder
from .inference import as_inference, inference_copy

__all__ = ["CVAE", "Decoder", "Encoder", "Fig6cCNN", "as_inference", "inference_copy"]
