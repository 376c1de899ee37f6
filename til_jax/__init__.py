"""til_jax: Triplet Importance Learning (Wu et al., CIKM 2022) in JAX/Flax.

Library map (each module's docstring says more):
  til_jax.data         readers, preprocessing, splits, negative sampling, noise, synthetic data
  til_jax.evaluation   full-ranking Recall/NDCG/Precision/HitRate@k, chunked and jit-compiled
  til_jax.models       MF, NeuMF, LightGCN, MGCCF behind one backbone interface
  til_jax.objectives   BPR (Eq. 1), weighted BPR (Eq. 2), T-CE/R-CE, PRIS weights
  til_jax.til          weight generator (Eq. 3), states (Eq. 4-6), clustering (Eq. 7-9),
                       bilevel one-step lookahead (Eq. 12-15)
  til_jax.train        TrainState, jit-compiled steps, epoch loop, checkpoints
"""

__version__ = "0.1.0"
