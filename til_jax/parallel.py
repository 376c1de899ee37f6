"""Data-parallel training over devices and hosts.

One 1-D `jax.sharding.Mesh` with axis name "data" over `config.parallel.num_devices` devices of
every process (0 = all of them). An epoch's batch [steps, B] is split along B over the mesh;
parameters, the weight generator and both optax states are replicated. The per-device epoch
function is the same `lax.scan(method.epoch_update(phase))` as on one device, with the method told the axis
name, so that its losses are global means (psum of masked sums / psum of counts) and its
gradients are pmean'ed: every device then holds exactly the single-device step's result, up to
the float32 rounding of the split sums. It runs

  * under `jax.shard_map` inside `jax.jit` (backend "shard_map", the default), or
  * under `jax.pmap` (backend "pmap"; since JAX 0.10 pmap is itself jit(shard_map(...,
    check_vma=False)) and is in maintenance mode).

Why the reductions are written as "global loss, pmean of its gradient": with check_vma=False
(pmap's mode, and ours by default) every device differentiates its own copy of the global loss,
which gives n_devices x its local share (psum transposes to psum), and pmean turns that into the
global gradient; with check_vma=True, jax.grad of the global loss with respect to replicated
parameters is already the global gradient and pmean of a replicated value is a no-op. The same
code is therefore exact in both modes, including the TIL hypergradient, which differentiates
through the pmean of the lookahead's inner gradient (psum is linear; JAX transposes it).
shard_map runs with check_vma=False by default because XLA's CPU code for it was ~2x faster
(BPR and TIL-UI epochs on MF, 1 device, 30k x 40k, batch 5000): with check_vma=True the
transposed implicit pvary of the replicated tables adds a scatter-add into a fresh zero table
per gather (6 instead of 2 per step). `DataParallel(check_vma=True)` keeps the static check that
the state stays replicated; the tests run both.

One device is a 1-device mesh running the same code. Methods whose `update` does not reduce
over an axis name (`method.supports_axis_name` false: the baselines) and
`config.parallel.shard_embeddings=True` run instead as plain `jax.jit` over arrays with
`NamedSharding`s (the batch split along B, embedding tables and their Adam moments optionally
split by rows): XLA's SPMD partitioner inserts the collectives, the semantics are global.

Several hosts: `initialize_distributed(config.parallel)` calls `jax.distributed.initialize`;
every process then draws the same global epoch arrays from the same seed and contributes only
the slices of its own devices (`put_batches`).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from til_jax.errors import ConfigError

AXIS = "data"
BACKENDS = ("shard_map", "pmap")

log = logging.getLogger("til_jax")


# --- collectives that are no-ops without an axis name (library functions call these) ---------

def psum(x, axis_name: str | None):
  """lax.psum over `axis_name`, or x itself when axis_name is None (single device)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def pmean(x, axis_name: str | None):
  """lax.pmean over `axis_name`, or x itself when axis_name is None (single device)."""
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def pmax(x, axis_name: str | None):
  """lax.pmax over `axis_name` (no gradient: use only for shifts that cancel), or x."""
  return x if axis_name is None else jax.lax.pmax(x, axis_name)


# --- processes and meshes ---------------------------------------------------------------------

def _cfg(pcfg, name: str, default):
  return pcfg.get(name, default) if pcfg is not None else default


def initialize_distributed(pcfg) -> bool:
  """`jax.distributed.initialize` from `config.parallel` (coordinator "host:port",
  num_processes, process_id), each falling back to the environment variables
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID. Does nothing (returns False) when
  no coordinator is given or JAX is already initialised. Must run before JAX starts a backend."""
  coordinator = _cfg(pcfg, "coordinator", "") or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  if not coordinator or jax.distributed.is_initialized():
    return False
  n = int(_cfg(pcfg, "num_processes", 0) or os.environ.get("JAX_NUM_PROCESSES", 0))
  pid = int(_cfg(pcfg, "process_id", -1))
  if pid < 0:
    pid = int(os.environ.get("JAX_PROCESS_ID", -1))
  if n < 1:
    raise ConfigError("config.parallel.num_processes: must be >= 1 with a coordinator "
                      f"({coordinator}); or set JAX_NUM_PROCESSES")
  if not 0 <= pid < n:
    raise ConfigError(f"config.parallel.process_id: must be in [0, {n}), got {pid}; "
                      "or set JAX_PROCESS_ID")
  # CPU cross-process collectives use gloo, JAX 0.10's default (jax_cpu_collectives_implementation).
  jax.distributed.initialize(coordinator, num_processes=n, process_id=pid)
  log.info("process %d of %d (coordinator %s)", pid, n, coordinator)
  return True


def mesh_devices(num_devices: int = 0) -> list:
  """The first `num_devices` devices of every process (0 = all), ordered by process."""
  per_process = {}
  for d in jax.devices():
    per_process.setdefault(d.process_index, []).append(d)
  n_local = min(len(v) for v in per_process.values())
  if num_devices < 0 or num_devices > n_local:
    raise ConfigError(f"config.parallel.num_devices: {num_devices} is not in [0, {n_local}] "
                      f"(devices per process: {n_local}; 0 = all)")
  k = num_devices or n_local
  return [d for p in sorted(per_process) for d in per_process[p][:k]]


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh with axis "data" over `mesh_devices(num_devices)`."""
  return Mesh(np.array(mesh_devices(num_devices)), (AXIS,))


def check_batch(batch_size: int, n_devices: int) -> None:
  if batch_size % n_devices:
    raise ConfigError(f"config.train.batch_size: {batch_size} is not divisible by the "
                      f"{n_devices} devices of the mesh (config.parallel.num_devices)")


def supports_axis_name(method) -> bool:
  return bool(getattr(method, "supports_axis_name", False))


# --- placing arrays -----------------------------------------------------------------------------

def _put(x, sharding: NamedSharding):
  """A global jax.Array with `sharding` from a value every process holds in full."""
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  host = np.asarray(jax.device_get(x)) if isinstance(x, jax.Array) else np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def local(tree):
  """A process-local copy of a pytree of (possibly global) arrays, on this process's first device:
  replicated arrays give their local shard (no copy); sharded ones are gathered."""
  dev = jax.local_devices()[0]

  def one(x):
    if not isinstance(x, jax.Array) or len(x.sharding.device_set) == 1:
      return x
    if x.is_fully_replicated:
      for s in x.addressable_shards:
        if s.device == dev:
          return s.data
      return jax.device_put(x.addressable_shards[0].data, dev)
    if x.is_fully_addressable:
      return jax.device_put(x, dev)
    from jax.experimental import multihost_utils
    return jax.device_put(multihost_utils.process_allgather(x, tiled=True), dev)
  return jax.tree.map(one, tree)


@dataclasses.dataclass
class DataParallel:
  """The mesh and how a run uses it. `rows`: the leading sizes of the tables that
  `shard_embeddings` splits by rows (n_users, n_items); `check_vma`: shard_map's replication
  check (see the module docstring)."""

  mesh: Mesh
  backend: str = "shard_map"
  shard_embeddings: bool = False
  rows: tuple[int, ...] = ()
  check_vma: bool = False

  @classmethod
  def from_config(cls, config, rows: tuple[int, ...] = ()) -> DataParallel:
    pcfg = config.get("parallel", None)
    backend = _cfg(pcfg, "backend", "shard_map")
    if backend not in BACKENDS:
      raise ConfigError(f"config.parallel.backend: {backend!r} is not allowed; allowed: "
                        f"{', '.join(BACKENDS)}")
    if backend == "pmap" and jax.process_count() > 1:
      raise ConfigError("config.parallel.backend: pmap is supported in one process here; use "
                        "shard_map with several processes")
    mesh = make_mesh(int(_cfg(pcfg, "num_devices", 0)))
    check_batch(int(config.train.batch_size), mesh.devices.size)
    return cls(mesh, backend, bool(_cfg(pcfg, "shard_embeddings", False)), tuple(rows))

  @property
  def size(self) -> int:
    return int(self.mesh.devices.size)

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(None, AXIS))

  def state_shardings(self, state):
    """NamedShardings for a TrainState: replicated, except (shard_embeddings) the leaves of
    params["model"], opt_state and aux whose leading size is one of `rows` and divisible by
    the mesh size, which are split by rows: P("data", None, ...)."""
    rep = self.replicated
    if not self.shard_embeddings:
      return jax.tree.map(lambda _: rep, state)

    def rows_or_rep(x):
      shape = np.shape(x)
      if len(shape) >= 1 and shape[0] in self.rows and shape[0] % self.size == 0:
        return NamedSharding(self.mesh, P(AXIS, *([None] * (len(shape) - 1))))
      return rep
    out = jax.tree.map(lambda _: rep, state)
    return out.replace(params={**out.params, "model": jax.tree.map(rows_or_rep,
                                                                   state.params["model"])},
                       opt_state=jax.tree.map(rows_or_rep, state.opt_state),
                       aux=jax.tree.map(rows_or_rep, state.aux))

  def put_state(self, state):
    return jax.tree.map(_put, state, self.state_shardings(state))

  def put_replicated(self, tree):
    return jax.tree.map(lambda x: _put(x, self.replicated), tree)

  def put_batches(self, batches: dict):
    """Host arrays [steps, B, ...] (the same global arrays in every process) -> global arrays
    split along B; each process transfers only the slices of its own devices."""
    sh = self.batch_sharding
    if jax.process_count() == 1:
      return jax.device_put(batches, sh)
    return jax.tree.map(lambda v: jax.make_array_from_callback(v.shape, sh, lambda idx: v[idx]),
                        batches)

  def abstract(self, state):
    """The restore target for Orbax: shapes, dtypes and this run's shardings."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
                        state, self.state_shardings(state))

  def mode(self, method) -> str:
    """"shard_map" | "pmap" (named-axis step) or "jit" (SPMD partitioner, global semantics)."""
    if self.shard_embeddings or not supports_axis_name(method):
      return "jit"
    return self.backend

  def epoch_fn(self, method):
    """run_epoch(state, batches, consts, phase) -> (state, metrics [steps] per name): the scan
    of `method.epoch_update(phase)` over an epoch of `phase` (`method.phase(epoch)`), one
    compiled function per phase.

    state: from `put_state` (donated); batches: host arrays [steps, B] (split here); consts:
    from `put_replicated`."""
    cache = {}
    if self.mode(method) == "pmap":  # one process (from_config refuses several)
      def run_pmap(state, batches, consts, phase: str):
        if phase not in cache:
          cache[phase] = jax.pmap(self._per_device(method, phase), axis_name=AXIS,
                                  in_axes=(None, 1, None), out_axes=None, donate_argnums=0,
                                  devices=list(self.mesh.devices.flat))
        # [steps, B] -> [steps, n_devices, B / n]: pmap maps axis 1, device d gets slice d
        split = jax.tree.map(lambda v: v.reshape(v.shape[0], self.size, -1, *v.shape[2:]), batches)
        return cache[phase](state, split, consts)
      return run_pmap

    def run(state, batches, consts, phase: str):
      if phase not in cache:
        cache[phase] = self.jitted_epoch(method, state, phase)
      return cache[phase](state, self.put_batches(batches), consts)
    return run

  def _per_device(self, method, phase: str):
    step = method.with_axis_name(AXIS).epoch_update(phase)

    def per_device(state, batches, consts):
      return jax.lax.scan(lambda s, b: step(s, b, consts), state, batches)
    return per_device

  def jitted_epoch(self, method, state, phase: str):
    """The jit-compiled epoch of `phase` for modes "shard_map" and "jit": f(state, batches,
    consts) with batches already split (`put_batches`); `state` (arrays or ShapeDtypeStructs)
    fixes the output shardings. `.lower(...)` it for XLA's memory analysis."""
    out_sh = (self.state_shardings(state), self.replicated)
    if self.mode(method) == "jit":
      step = method.epoch_update(phase)

      def scan(state, batches, consts):
        return jax.lax.scan(lambda s, b: step(s, b, consts), state, batches)
      return jax.jit(scan, donate_argnums=0, out_shardings=out_sh)
    fn = jax.shard_map(self._per_device(method, phase), mesh=self.mesh,
                       in_specs=(P(), P(None, AXIS), P()), out_specs=(P(), P()),
                       check_vma=self.check_vma)
    return jax.jit(fn, donate_argnums=0, out_shardings=out_sh)
