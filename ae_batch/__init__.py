"""ae-batch: how does batch size change what an autoencoder learns from medical data?"""

__version__ = "0.1.0"
