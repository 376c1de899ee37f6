"""Helpers for the dataset x backbone configs."""

from configs import default
from configs.default import set_fields

DATASETS = {"gowalla": "gowalla", "amazon_cd": "amazon-cd", "lastfm": "lastfm",
            "ml100k": "ml-100k", "synthetic": "synthetic"}


def make(dataset: str, backbone: str, arg: str | None = None, **overrides):
  """The default config with data.name and model.name set and `overrides` applied. `arg` names
  a budget (configs/default.py BUDGETS, with its dataset and backbone's DATASET_BUDGETS fields), whose fields
  then win over the overrides; without it the paper's budget is applied first and the overrides
  win."""
  c = default.defaults()
  c.data.name = DATASETS[dataset]
  c.model.name = backbone
  if not arg:
    default.apply_budget(c, "paper")
  set_fields(c, overrides)
  if arg:
    default.apply_budget(c, arg)
  return c
