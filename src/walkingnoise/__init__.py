"""walkingnoise: where and how much activation noise a neural network tolerates.

Implements the Walking Noise method (Borras, Klein, Fröning, arXiv 2212.10430): Gaussian noise
injected at the activations of any PyTorch model, globally or at one site that walks through the
network, with noisy or clean training.
"""

__version__ = "0.1.0"
