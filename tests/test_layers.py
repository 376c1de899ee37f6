"""The import graph: layers without cycles (docs/DESIGN.md "Layout").

  core         til_jax.{errors, registry, parallel, state, objectives, optim, evaluation, bpr},
               til_jax.data.*, til_jax.models.*
  methods      til_jax.til.*, til_jax.baselines.*
  training     til_jax.train.*
  entry points experiments.*, benchmarks.*, configs.*

A module may import its own layer or those below, never one above (function-level imports
included), and no set of modules may import each other in a circle.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("til_jax", "experiments", "benchmarks", "configs")
LAYERS = (("til_jax.til", 1), ("til_jax.baselines", 1), ("til_jax.train", 2),
          ("experiments", 3), ("benchmarks", 3), ("configs", 3), ("til_jax", 0))


def layer(module: str) -> int:
  return next(r for prefix, r in LAYERS if module == prefix or module.startswith(prefix + "."))


def modules() -> dict[str, str]:
  out = {}
  for pkg in PACKAGES:
    for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
      for f in files:
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
          out[rel.removesuffix(".__init__")] = os.path.join(dirpath, f)
  return out


def graph() -> dict[str, set[str]]:
  """module -> the project modules it imports (anywhere in its file)."""
  mods = modules()
  edges = {m: set() for m in mods}
  for m, path in mods.items():
    for node in ast.walk(ast.parse(open(path).read(), path)):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                 for a in node.names]
      else:
        continue
      edges[m] |= {n for n in names if n in mods and n != m}
  return edges


def test_no_module_imports_a_layer_above_its_own():
  bad = [f"{m} ({layer(m)}) imports {t} ({layer(t)})" for m, ts in graph().items() for t in ts
         if layer(t) > layer(m)]
  assert not bad, "\n".join(bad)


def test_the_import_graph_has_no_cycle():
  edges = graph()
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for t in sorted(edges[m]):
      if state.get(t) == "open":
        cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
      elif t not in state:
        visit(t)
    stack.pop()
    state[m] = "done"
  for m in sorted(edges):
    if m not in state:
      visit(m)
  assert not cycles, "\n".join(cycles)


def test_the_checker_sees_imports():  # the graph is not empty: the tests above can fail
  edges = graph()
  assert "til_jax.bpr" in edges["til_jax.til.api"]
  assert "til_jax.models.sparse" in edges["til_jax.models.lightgcn"]
