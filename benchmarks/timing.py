"""What every benchmark records: a timing summary and the process's peak RSS."""

from __future__ import annotations

import resource

import numpy as np


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def stats(name: str, seconds: list[float]) -> dict:
  ms = np.asarray(seconds) * 1e3
  return {"name": name, "median_ms": float(np.median(ms)), "p10_ms": float(np.percentile(ms, 10)),
          "p90_ms": float(np.percentile(ms, 90)), "n": len(ms), "peak_rss_mb": peak_rss_mb()}
