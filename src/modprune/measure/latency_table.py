"""Per-layer latency tables: what one convolution / linear layer of given widths costs on this machine.

A pruned model's latency is mostly the sum of its convolutions and linear layers, each of which costs
what the backend's kernel for *that shape* costs (not what its MACs say: a width off the CPU's vector
multiple runs as slowly as the next multiple, a grouped conv may run slower than a dense one). A
:class:`LatencyTable` answers ``cost_ms(key)`` for a :class:`LayerKey` (layer kind, channels, kernel,
stride, padding, dilation, groups, input size, batch, dtype, threads):

* :class:`MeasuredLatencyTable` times each layer in isolation the first time a key is asked for (lazily:
  only the widths a plan needs), with the harness of :func:`modprune.measure.measure_latency` (warm-up,
  several rounds, median), and caches the result on disk under the user's cache directory
  (``$MODPRUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/modprune``, else ``~/.cache/modprune``), in a file
  named after a fingerprint of the hardware and software (CPU model, vector capability, torch version,
  threads, backend, and the ONNX Runtime version for that backend): a different machine, version or
  thread count never reuses another's numbers. Each timing is watched by the busy-machine detector
  (:class:`~modprune.measure.machine.MachineProbe`: CPU time against wall time, runnable tasks): a layer
  timed while the process waited for a core is timed again (``retries``), the fastest attempt kept, and
  an entry that never got a quiet attempt is marked *noisy* in the cache and timed again the next time a
  table uses it. A prediction counts the noisy timings it rests on (:attr:`LatencyPrediction.noisy_calls`).
* :class:`FormulaLatencyTable` is deterministic (a cost per MAC, per layer and per output element, with
  widths rounded up to a vector multiple): for tests, and for planning without timing anything.

Whole-model prediction from a table is in :mod:`modprune.measure.latency_model`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from modprune.exceptions import ConfigError

__all__ = [
    "BACKENDS",
    "FormulaLatencyTable",
    "LatencyTable",
    "LayerKey",
    "MeasuredLatencyTable",
    "cpu_model",
    "default_cache_dir",
    "fingerprint",
    "time_call",
]

log = logging.getLogger(__name__)

#: Backends a :class:`MeasuredLatencyTable` can time layers on.
BACKENDS = ("torch-cpu", "onnxruntime-cpu")
#: Version of the cache file layout (part of the fingerprint).
CACHE_FORMAT = 1

_KINDS = {nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.Conv3d: "conv3d", nn.Linear: "linear"}


@dataclass(frozen=True)
class LayerKey:
    """One layer call, as far as its latency is concerned.

    For a linear layer ``kernel``, ``stride``, ``padding`` and ``dilation`` are empty, ``groups`` is 1
    and ``size`` holds the leading dimensions of its input between the batch and the features.
    """

    kind: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    size: tuple[int, ...]
    batch: int
    dtype: str = "float32"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.kind not in _KINDS.values():
            raise ConfigError(f"layer kind {self.kind!r} is not one of {sorted(_KINDS.values())}", self.kind)
        if min(self.in_channels, self.out_channels, self.groups, self.batch, self.threads) < 1:
            raise ConfigError(f"a layer key needs positive channels, groups, batch and threads, got {self}", self)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ConfigError(f"channels {self.in_channels}->{self.out_channels} are not divisible by groups "
                              f"{self.groups}", self)

    @classmethod
    def of(cls, module: nn.Module, x: torch.Tensor, threads: int = 1) -> "LayerKey | None":
        """The key of ``module`` called on ``x`` (None for a layer kind no table knows)."""
        kind = _KINDS.get(type(module))
        if kind is None or x.ndim < 2:
            return None
        if kind == "linear":
            return cls(kind, module.in_features, module.out_features, (), (), (), (), 1,
                       tuple(x.shape[1:-1]), int(x.shape[0]), str(x.dtype).replace("torch.", ""), threads)
        if not isinstance(module.padding, tuple) or module.padding_mode != "zeros":
            return None  # "same" padding strings and non-zero padding modes: left to the residual
        return cls(kind, module.in_channels, module.out_channels, tuple(module.kernel_size), tuple(module.stride),
                   tuple(module.padding), tuple(module.dilation), module.groups, tuple(x.shape[2:]),
                   int(x.shape[0]), str(x.dtype).replace("torch.", ""), threads)

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def output_size(self) -> tuple[int, ...]:
        """Spatial size of the output (a linear layer's leading dimensions)."""
        if self.kind == "linear":
            return self.size
        return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                     for n, k, s, p, d in zip(self.size, self.kernel, self.stride, self.padding, self.dilation))

    def output_elements(self) -> int:
        return self.batch * self.out_channels * math.prod(self.output_size())

    def macs(self) -> int:
        """Multiply-accumulates of one call."""
        return self.output_elements() * (self.in_channels // self.groups) * math.prod(self.kernel or (1,))

    def with_widths(self, in_channels: int, out_channels: int) -> "LayerKey":
        """This key with other channel counts (a depthwise layer's groups follow its channels)."""
        if self.depthwise:
            width = min(in_channels, out_channels)
            return replace(self, in_channels=width, out_channels=width, groups=width)
        return replace(self, in_channels=in_channels, out_channels=out_channels)

    def text(self) -> str:
        """The key as a cache entry name."""
        dims = lambda t: "x".join(map(str, t)) or "-"  # noqa: E731
        return (f"{self.kind}|i{self.in_channels}|o{self.out_channels}|k{dims(self.kernel)}|s{dims(self.stride)}|"
                f"p{dims(self.padding)}|d{dims(self.dilation)}|g{self.groups}|n{dims(self.size)}|b{self.batch}|"
                f"{self.dtype}|t{self.threads}")

    def build(self) -> tuple[nn.Module, torch.Tensor]:
        """A fresh layer of this shape (with bias, as a fused layer has) and a random input for it."""
        dtype = getattr(torch, self.dtype)
        if self.kind == "linear":
            return nn.Linear(self.in_channels, self.out_channels).to(dtype), torch.randn(
                self.batch, *self.size, self.in_channels, dtype=dtype)
        conv = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d}[self.kind]
        layer = conv(self.in_channels, self.out_channels, self.kernel, self.stride, self.padding, self.dilation,
                     self.groups)
        return layer.to(dtype), torch.randn(self.batch, self.in_channels, *self.size, dtype=dtype)


class LatencyTable(ABC):
    """Latency of single layers (milliseconds), and optionally of whole models.

    ``deterministic`` tables (formulas, recorded numbers) give the same answer every time; planning on
    them needs no timing. ``threads`` is the thread count the numbers are for.
    """

    backend: str = "torch-cpu"
    threads: int = 1
    deterministic: bool = False

    @property
    def times_models(self) -> bool:
        """Whether :meth:`measure_models` times whole models (else the prediction is all there is)."""
        return False

    @abstractmethod
    def cost_ms(self, key: LayerKey) -> float:
        """Milliseconds one call of the layer ``key`` takes."""

    def is_noisy(self, key: LayerKey) -> bool:
        """Whether the figure for ``key`` was timed on a busy machine (a deterministic table: never)."""
        return False

    def fingerprint(self) -> dict[str, Any]:
        """What the numbers depend on (hardware, versions, backend, threads)."""
        return fingerprint(self.backend, self.threads)

    def dispatch_ms(self) -> float:
        """Milliseconds one operator call costs beyond its work (a call on a one-element tensor)."""
        a = torch.ones(1)
        with torch.inference_mode():
            return time_call(lambda: torch.relu(a), 3, 15, self.threads)

    def measure_models(self, models: Mapping[str, nn.Module], example_inputs: Any) -> dict[str, Any] | None:
        """Median milliseconds of each whole model (``{"ms": {name: ms}, "reliable": bool, ...}``), timed
        together; None when this table cannot time models (the prediction is then all there is)."""
        return None


class FormulaLatencyTable(LatencyTable):
    """A deterministic table: ``per_layer + per_mac * MACs + per_output * output elements`` milliseconds,
    with channel counts first rounded up to a multiple of ``align`` (as SIMD kernels run them).

    :param measure_fn: optional ``(model, example_inputs) -> ms`` playing the real model's timing (for
        tests of the predicted-against-measured report); None: models are not timed.
    """

    deterministic = True
    backend = "formula"

    def __init__(self, per_mac: float = 1e-6, per_layer: float = 0.01, per_output: float = 0.0, align: int = 8,
                 threads: int = 1, measure_fn: Callable[[nn.Module, Any], float] | None = None) -> None:
        if align < 1 or threads < 1 or min(per_mac, per_layer, per_output) < 0:
            raise ConfigError("FormulaLatencyTable needs align >= 1, threads >= 1 and non-negative costs", self)
        self.per_mac, self.per_layer, self.per_output, self.align = per_mac, per_layer, per_output, align
        self.threads = threads
        self.measure_fn = measure_fn
        self.asked = 0

    @property
    def times_models(self) -> bool:
        return self.measure_fn is not None

    def dispatch_ms(self) -> float:
        return 0.0

    def cost_ms(self, key: LayerKey) -> float:
        self.asked += 1
        up = lambda c: -(-c // self.align) * self.align  # noqa: E731
        groups = up(key.groups) if key.depthwise else key.groups
        padded = replace(key, in_channels=up(key.in_channels), out_channels=up(key.out_channels), groups=groups)
        if padded.in_channels % padded.groups or padded.out_channels % padded.groups:
            padded = replace(padded, groups=1 if not key.depthwise else padded.in_channels)
        return self.per_layer + self.per_mac * padded.macs() + self.per_output * padded.output_elements()

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": "formula", "per_mac": self.per_mac, "per_layer": self.per_layer,
                "per_output": self.per_output, "align": self.align, "threads": self.threads}

    def measure_models(self, models: Mapping[str, nn.Module], example_inputs: Any) -> dict[str, Any] | None:
        if self.measure_fn is None:
            return None
        return {"ms": {name: float(self.measure_fn(m, example_inputs)) for name, m in models.items()},
                "reliable": True, "machine": None}


def default_cache_dir() -> Path:
    """``$MODPRUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/modprune``, else ``~/.cache/modprune``."""
    if os.environ.get("MODPRUNE_CACHE_DIR"):
        return Path(os.environ["MODPRUNE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "modprune"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def fingerprint(backend: str, threads: int) -> dict[str, Any]:
    """What a measured table's numbers depend on: CPU, its vector capability, versions, backend, threads."""
    if backend not in BACKENDS:
        raise ConfigError(f"latency backend {backend!r} is not one of {', '.join(BACKENDS)}", backend)
    found: dict[str, Any] = {"format": CACHE_FORMAT, "cpu": cpu_model(), "machine": platform.machine(),
                             "capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
                             "torch": torch.__version__, "backend": backend, "threads": int(threads)}
    if backend == "onnxruntime-cpu":
        import onnxruntime

        found["onnxruntime"] = onnxruntime.__version__
    return found


def _fingerprint_hash(found: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(found), sort_keys=True).encode()).hexdigest()[:16]


#: A timed sample repeats the call until it lasts at least this long (timer resolution, call overhead).
MIN_SAMPLE_S = 5e-4


def time_call(fn: Callable[[], Any], warmup: int, rounds: int, threads: int) -> float:
    """Median milliseconds of one call of ``fn``: ``warmup`` untimed calls, then ``rounds`` samples, each
    repeating the call enough times to last :data:`MIN_SAMPLE_S` (``threads`` torch threads; restored)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(max(1, warmup)):
            fn()
        started = time.perf_counter()
        fn()
        once = max(time.perf_counter() - started, 1e-7)
        repeat = max(1, min(1000, math.ceil(MIN_SAMPLE_S / once)))
        samples = []
        for _ in range(max(3, rounds)):
            started = time.perf_counter()
            for _ in range(repeat):
                fn()
            samples.append((time.perf_counter() - started) / repeat)
    finally:
        torch.set_num_threads(old)
    return float(statistics.median(samples)) * 1e3


class MeasuredLatencyTable(LatencyTable):
    """Layer latencies timed on this machine when first asked for, cached on disk by fingerprint.

    :param backend: ``torch-cpu`` (eager PyTorch) or ``onnxruntime-cpu`` (each layer exported alone).
    :param threads: intra-op threads while timing (the numbers are for this count).
    :param cache_dir: where the cache file lives (default :func:`default_cache_dir`); None-like ``False``
        keeps the table in memory only.
    :param rounds, warmup: timed rounds (median taken) and untimed calls per layer.
    :param retries: further timings of a layer whose timing the busy-machine detector flagged (the
        fastest attempt is kept; none quiet: the entry is noisy, and timed again on its next first use).
    :param time_layer: ``(key) -> ms`` or ``(key) -> (ms, quiet)`` replacing the timing (tests); a bare
        ``ms`` counts as quiet.
    :param fingerprint_override: entries replacing those of :func:`fingerprint` (tests).
    """

    def __init__(self, backend: str = "torch-cpu", threads: int = 1, cache_dir: str | os.PathLike[str] | None | bool = None,
                 *, rounds: int = 10, warmup: int = 3, retries: int = 2,
                 time_layer: Callable[[LayerKey], float | tuple[float, bool]] | None = None,
                 model_rounds: int = 20, fingerprint_override: Mapping[str, Any] | None = None) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads={threads!r} must be an integer >= 1", threads)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries={retries!r} must be an integer >= 0", retries)
        self.backend, self.threads = backend, threads
        self.rounds, self.warmup, self.model_rounds, self.retries = rounds, warmup, model_rounds, retries
        self._fingerprint = {**fingerprint(backend, threads), **dict(fingerprint_override or {})}
        self._time_layer = time_layer or self._timed
        self.entries: dict[str, float] = {}
        #: Entries no attempt of which ran on a quiet machine (names as :meth:`LayerKey.text`).
        self.noisy: set[str] = set()
        self._checked: set[str] = set()  # noisy entries already timed again by this table
        self.measured = self.retimed = 0
        self.path: Path | None = None
        if cache_dir is not False:
            folder = Path(cache_dir) if cache_dir else default_cache_dir()
            self.path = folder / "latency" / f"{backend}-{_fingerprint_hash(self._fingerprint)}.json"
            self.entries, self.noisy = self._load()

    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fingerprint)

    @property
    def times_models(self) -> bool:
        return True

    def cost_ms(self, key: LayerKey) -> float:
        key = replace(key, threads=self.threads)
        name = key.text()
        old = self.entries.get(name)
        if old is None or (name in self.noisy and name not in self._checked):
            self._checked.add(name)  # a noisy entry is timed again once per table, at its first use
            ms, quiet = self._attempts(key)
            if old is None:
                self.measured += 1
            else:
                self.retimed += 1
            self.entries[name] = ms if quiet or old is None else min(old, ms)
            if quiet:
                self.noisy.discard(name)
            else:
                self.noisy.add(name)
                log.info("layer %s timed on a busy machine (%d attempts): %.4f ms, marked noisy", name,
                         1 + self.retries, self.entries[name])
            self.save()
        return self.entries[name]

    def is_noisy(self, key: LayerKey) -> bool:
        return replace(key, threads=self.threads).text() in self.noisy

    def _attempts(self, key: LayerKey) -> tuple[float, bool]:
        """``(ms, quiet)``: timings of ``key`` until one ran on a quiet machine (at most ``1 + retries``);
        the fastest attempt (waiting for a core only ever slows a timing down)."""
        best = math.inf
        for _ in range(1 + self.retries):
            result = self._time_layer(key)
            ms, quiet = result if isinstance(result, tuple) else (result, True)
            best = min(best, float(ms))
            if quiet:
                return best, True
        return best, False

    def costs(self, keys: Iterable[LayerKey]) -> list[float]:
        return [self.cost_ms(k) for k in keys]

    def _load(self) -> tuple[dict[str, float], set[str]]:
        """Entries (and the noisy ones' names) of the cache file when its fingerprint is this table's
        (else none: measured anew)."""
        if self.path is None or not self.path.is_file():
            return {}, set()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("latency cache %s unreadable (%s): measuring anew", self.path, exc)
            return {}, set()
        if not isinstance(data, dict) or data.get("fingerprint") != self._fingerprint:
            log.info("latency cache %s is for another machine or version: measuring anew", self.path)
            return {}, set()
        raw = data.get("entries", {})
        raw = raw if isinstance(raw, dict) else {}
        entries = {str(k): float(v) for k, v in raw.items() if isinstance(v, (int, float))}
        noisy = data.get("noisy", [])
        return entries, {str(n) for n in noisy if str(n) in entries} if isinstance(noisy, list) else set()

    def save(self) -> None:
        """Write the cache file (atomically: a reader never sees half a file)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"fingerprint": self._fingerprint, "entries": self.entries,
                              "noisy": sorted(self.noisy)}, sort_keys=True, indent=0)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".latency-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(payload)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _timed(self, key: LayerKey) -> tuple[float, bool]:
        """``(ms, quiet)``: median milliseconds of the layer ``key`` alone, on this table's backend, and
        whether the busy-machine detector stayed silent while it was timed."""
        from modprune.measure.machine import MachineProbe, assess_machine

        layer, x = key.build()
        layer.eval()
        if self.backend == "onnxruntime-cpu":
            from modprune.measure.latency_model import ort_session_of

            session = ort_session_of(layer, x, self.threads)
            feed = {session.get_inputs()[0].name: x.numpy()}
            call: Callable[[], Any] = lambda: session.run(None, feed)  # noqa: E731
        else:
            call = lambda: layer(x)  # noqa: E731
        probe = MachineProbe(self.threads)
        probe.start()
        probe.sample()
        with torch.inference_mode():
            ms = time_call(call, self.warmup, self.rounds, self.threads)
        probe.sample()
        probe.stop()
        # CPU time against wall time and runnable tasks; not the load average, which lags by a minute
        check = assess_machine(cores=os.cpu_count() or 1, own_threads=self.threads, cpu_s=probe.cpu_s,
                               wall_s=probe.wall_s, runnable=probe.runnable or None)
        return ms, not check.busy

    def measure_models(self, models: Mapping[str, nn.Module], example_inputs: Any) -> dict[str, Any] | None:
        """The models timed together (interleaved rounds, busy-machine detector on); for the ONNX Runtime
        backend, their exported graphs."""
        from modprune.measure.latency import measure_latency

        if self.backend == "onnxruntime-cpu":  # the graphs ONNX Runtime runs, exported in memory
            from modprune.measure.latency_model import ort_session_of

            models = {name: ort_session_of(m, example_inputs, self.threads) for name, m in models.items()}
        result = measure_latency(dict(models), example_inputs, warmup=3, rounds=self.model_rounds,
                                 threads=self.threads, resamples=200)
        return {"ms": {n: float(m["median_ms"]) for n, m in result["models"].items()},
                "ratios": {n: float(r["median"]) for n, r in result["ratios"].items()},
                "reliable": bool(result["reliable"]), "machine": result["machine"]}

    def describe(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint(), "path": str(self.path) if self.path else None,
                "entries": len(self.entries), "measured": self.measured, "retimed": self.retimed,
                "noisy": len(self.noisy)}


def key_dict(key: LayerKey) -> dict[str, Any]:
    """A key as a plain dict (JSON friendly)."""
    return asdict(key)
