"""Helpers for the dataset x backbone configs."""

from configs import default

DATASETS = {"gowalla": "gowalla", "amazon_cd": "amazon-cd", "lastfm": "lastfm-2k",
            "ml100k": "ml-100k", "synthetic": "synthetic"}


def set_fields(c, overrides: dict) -> None:
  """Sets dotted fields in place: {"optim.lr": 1e-2} -> c.optim.lr = 1e-2."""
  for k, v in overrides.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v


def make(dataset: str, backbone: str, arg: str | None = None, **overrides):
  """The default config with data.name and model.name set; `arg` is a budget: quick | cpu |
  paper (default)."""
  c = default.get_config()
  c.data.name = DATASETS[dataset]
  c.model.name = backbone
  if backbone in ("lightgcn", "mgccf"):
    c.model.layers = 1
  set_fields(c, overrides)
  if arg == "quick":
    default.apply_quick(c)
  elif arg == "cpu":
    default.apply_cpu(c)
  elif arg not in (None, "", "paper"):
    raise ValueError(f"unknown config argument {arg!r}: quick | cpu | paper")
  return c
