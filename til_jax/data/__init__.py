"""Data layer: readers, preprocessing, the `Dataset`/`CSR` containers, negative sampling,
noise injection and synthetic data with ground truth.

  readers     file formats -> `Interactions` (file:line errors)
  preprocess  dedupe, rating threshold, k-core, id remap, per-user split, npz cache
  registry    `load_dataset(config.data)`: names, resolution, downloads (`download`)
  sampling    uniform negative sampler, epoch triplets
  noise       Noisy-Pos / Noisy-Neg injection
  synthetic   clustered data with known noisy positives and false negatives
"""

from til_jax.data.dataset import CSR, Dataset
from til_jax.data.noise import inject_noise
from til_jax.data.readers import Interactions, read_interactions
from til_jax.data.registry import load_dataset, load_split_folder
from til_jax.data.sampling import UniformNegativeSampler, epoch_triplets
from til_jax.data.synthetic import make_synthetic

__all__ = ["CSR", "Dataset", "load_dataset", "load_split_folder", "UniformNegativeSampler",
           "epoch_triplets", "inject_noise", "make_synthetic", "Interactions", "read_interactions"]
