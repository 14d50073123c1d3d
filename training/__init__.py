"""Offline training of denoising autoencoders: data loading, the training loop (single process and
``torchrun`` data-parallel), test-split evaluation, and the study report."""
