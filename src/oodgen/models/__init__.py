"""Networks: the conditional VAE (Fig. 6a/b), the classifier (Fig. 6c) and the confident
classifier's DCGAN."""
from .classifier import Fig6cCNN
from .cvae import CVAE, Decoder, Encoder
from .dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init
from .inference import PRECISIONS, as_inference, inference_copy, model_precision, resolve_precision

__all__ = ["CVAE", "DCGANDiscriminator", "DCGANGenerator", "Decoder", "Encoder", "Fig6cCNN", "as_inference",
           "dcgan_init", "inference_copy", "model_precision", "PRECISIONS", "resolve_precision"]
