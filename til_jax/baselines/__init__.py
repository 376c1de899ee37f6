"""The paper's baselines as training methods (registered on import with `config.method` names):

  aobpr, wbpr, pris      negative sampling (Rendle & Freudenthaler 2014; Gantner et al. 2012;
                         Lian et al. 2020)
  tce, rce               truncated / reweighted pointwise BCE (Wang et al. 2021)
  tce_bpr, rce_bpr       the same two ideas on the BPR loss (the TIL paper's variants)

`til_jax.train.methods.make_method` imports this package the first time it meets a name it does
not know. Hyper-parameters: `config.baselines` (see `methods.DEFAULTS`).
"""

from til_jax.baselines.methods import AOBPR, DEFAULTS, METHODS, PRIS, RCE, RCEBPR, TCE, TCEBPR, WBPR
from til_jax.train.methods import register

for _name, _cls in METHODS.items():
  register(_name, _cls)

__all__ = ["AOBPR", "DEFAULTS", "METHODS", "PRIS", "RCE", "RCEBPR", "TCE", "TCEBPR", "WBPR"]
