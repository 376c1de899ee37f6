"""The paper's baselines as training methods, registered under their `config.method` names:

  aobpr, wbpr, pris      negative sampling (Rendle & Freudenthaler 2014; Gantner et al. 2012;
                         Lian et al. 2020)
  tce, rce               truncated / reweighted pointwise BCE (Wang et al. 2021)
  tce_bpr, rce_bpr       the same two ideas on the BPR loss (the TIL paper's variants)

Hyper-parameters: `config.baselines` (configs/default.py).
"""

from til_jax.baselines.methods import AOBPR, PRIS, RCE, RCEBPR, TCE, TCEBPR, WBPR

__all__ = ["AOBPR", "PRIS", "RCE", "RCEBPR", "TCE", "TCEBPR", "WBPR"]
