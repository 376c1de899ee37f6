"""Data layer: readers, preprocessing, the `Dataset`/`CSR` containers, negative sampling,
noise injection and synthetic data with ground truth."""

from til_jax.data.dataset import CSR, Dataset
from til_jax.data.registry import load_dataset, load_split_folder
from til_jax.data.sampling import UniformNegativeSampler, epoch_triplets

__all__ = ["CSR", "Dataset", "load_dataset", "load_split_folder", "UniformNegativeSampler",
           "epoch_triplets"]
