"""Plain-text tables of results."""


def format_table(result: dict) -> str:
  """The final valid/test metrics of a run as a small table."""
  names = sorted(result["valid"], key=lambda k: (k.split("@")[0], int(k.split("@")[1])))
  rows = [f"{result['dataset']} | {result['backbone']} | {result['method']} | seed {result['seed']}"
          f" | best epoch {result['best_epoch']} of {result['epochs']}"
          f" | {result['train_seconds']:.0f}s training",
          f"{'metric':<14}{'valid':>10}{'test':>10}"]
  rows += [f"{n:<14}{result['valid'][n]:>10.4f}{result['test'][n]:>10.4f}" for n in names]
  return "\n".join(rows)
