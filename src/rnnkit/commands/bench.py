"""Time rnnkit's LSTM/GRU/RNN against the peers installed (torch, onnxruntime), in one process.

Every cell of the grid runs each framework in turn, interleaved, on the same
weights and inputs; the table shows median times and the ratios torch/rnnkit
and ORT/rnnkit (above 1: rnnkit is faster), then their geometric mean, the peak
memory of one call (each framework in a fresh subprocess) and the first-call
time (numba compiling cold, then loading from its cache). float32, 2 threads.

Each row's "x bound" is rnnkit's time divided by the FLOP bound: the cell's matrix
products (input projections, per-step products and, for training, the backward's
three more of each) at the sgemm rate of this run (float32 2048^3 on rnnkit's BLAS,
2 threads, measured once at the start). Packed cells count the real steps only.

Grid (T steps, B batch, I input, H hidden, L layers, D directions):
  seed T5 B3 I10 H20 L2 | tiny T100 B1 I32 H32 | small T100 B16 I128 H128
  medium T100 B64 I256 H256 L2 | bidir T100 B32 I256 H256 L2 D2
  large T50 B64 I1024 H1024 | packed = medium, lengths uniform in [T/2, T]
  stream = one step of seed (B3 I10 H20 L2) with the state carried from call to call:
    rnnkit ``stream(x_t)``, torch ``model(x_t, state)``, onnxruntime ``run`` with the state
    fed back
onnxruntime runs torch's own ONNX export of the same weights (rnnkit's without torch,
and for the packed cells, whose ``sequence_lens`` torch's exporter cannot write).
  lengths = packed's shapes, lengths in random order: rnnkit ``model(x, lengths=...)``,
    torch pack -> call -> pad (what it needs instead), onnxruntime with sequence_lens; the
    line under each row divides it by rnnkit's time on the same input already packed
Tasks: inference (no_grad) and a training step (forward + backward of output.sum());
stream cells infer only.

``--options`` adds the cell options' table (API.md "Cell options"): at ``medium`` (or
``--options-size``), for each mode and task, the plain layer and the same layer with each
option alone (layer_norm, recurrent_dropout 0.25, zoneout 0.1, LSTM peepholes) and all
together, each as its time over the plain layer's (inference in eval mode, training in
training mode, masks drawn); and for the layer-norm LSTM's training step, the torch loop
of ``benchmarks/torch_layer_norm_lstm.py`` (torch has no layer-norm LSTM) over rnnkit's.

Run it as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE rnnkit bench`: those two
variables, when set, slow OpenBLAS down. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

from ._argtypes import nonnegative_float, positive_int

GRID = {  # name: (T, B, I, H, layers, directions, packed)
    "seed": (5, 3, 10, 20, 2, 1, False),
    "tiny": (100, 1, 32, 32, 1, 1, False),
    "small": (100, 16, 128, 128, 1, 1, False),
    "medium": (100, 64, 256, 256, 2, 1, False),
    "bidir": (100, 32, 256, 256, 2, 2, False),
    "large": (50, 64, 1024, 1024, 1, 1, False),
    "packed": (100, 64, 256, 256, 2, 1, True),
    "stream": (1, 3, 10, 20, 2, 1, False),  # one step per call
    "lengths": (100, 64, 256, 256, 2, 1, True),
}
QUICK = ("seed", "tiny", "small", "packed", "stream", "lengths")
MODES = ("LSTM", "GRU", "RNN")
TASKS = ("infer", "train")


def _tasks(size):
    return ("infer",) if size == "stream" else TASKS
THREADS = 2
PAUSE = 0.2  # seconds between two frameworks' turns (see _time_interleaved)
WARM = 0.05  # seconds of untimed calls that start each turn


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"reduced grid ({', '.join(QUICK)}) and fewer repeats")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument("--sizes", default=None,
                        help=f"comma-separated grid rows, from {', '.join(GRID)}")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: LSTM,GRU,RNN")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="timed calls per framework and cell (default 15, quick 5)")
    parser.add_argument("--budget", type=nonnegative_float, default=None,
                        help="seconds per cell and framework at most (default 3, quick 1)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--no-compile", action="store_true", help="skip the first-call runs")
    parser.add_argument("--options", action="store_true",
                        help="add the cell options' table (layer norm, recurrent dropout, "
                             "zoneout, peepholes against the plain layer)")
    parser.add_argument("--options-only", action="store_true",
                        help="the cell options' table alone (no grid)")
    parser.add_argument("--options-size", default="medium",
                        help="grid row of the options' table (default medium)")
    parser.add_argument("--_memory-child", dest="memory_child", default=None,
                        help=argparse.SUPPRESS)


# ---------------------------------------------------------------- building the cells


def _lengths(rng, T, B):
    import numpy as np

    return np.sort(rng.integers(T // 2, T + 1, B))[::-1].copy()


class _Cell:
    """One (size, mode, task): the same weights and input for every framework."""

    def __init__(self, size, mode, task, seed=0):
        import numpy as np

        import rnnkit

        self.size, self.mode, self.task = size, mode, task
        T, B, I, H, layers, D, packed = GRID[size]
        self.T, self.B, self.I, self.H, self.layers, self.D, self.packed = GRID[size]
        rng = np.random.default_rng(seed)
        rnnkit.manual_seed(seed)
        cls = getattr(rnnkit.nn, mode)
        self.ours = cls(I, H, num_layers=layers, bidirectional=D == 2)
        self.x = rng.standard_normal((T, B, I)).astype(np.float32)
        self.lengths = _lengths(rng, T, B) if packed else None
        if size == "lengths":  # a real batch comes in no particular order
            self.lengths = rng.permutation(self.lengths)
        if packed:  # zeros past each end, like a real padded batch
            self.x[np.arange(T)[:, None] >= self.lengths[None, :]] = 0.0

    # ------------------------------------------------------------ rnnkit

    def rnnkit_call(self):
        import rnnkit
        from rnnkit.nn.utils.rnn import pack_padded_sequence

        m, x, lengths = self.ours, self.x, self.lengths
        if self.size == "stream":
            stream, x_t = m.stream(batch_size=self.B), x[0]  # (B, I): one step
            return lambda: stream(x_t)
        if self.size == "lengths":
            return self._lengths_call(lambda model: model(x, lengths=lengths)[0],
                                      lambda out: out)
        if self.task == "infer":
            if lengths is None:
                def call():
                    with rnnkit.no_grad():
                        return m(x)
            else:
                def call():
                    with rnnkit.no_grad():
                        return m(pack_padded_sequence(x, lengths, enforce_sorted=False))
            return call

        def loss(model, x):
            if lengths is None:
                return model(x)[0].sum()
            return model(pack_padded_sequence(x, lengths, enforce_sorted=False))[0].data.sum()

        step = rnnkit.value_and_grad(loss)

        def call():
            m.zero_grad()
            return step(m, x)

        return call

    def packed_call(self):
        """The lengths cell's comparison: rnnkit on the same input already packed."""
        from rnnkit.nn.utils.rnn import pack_padded_sequence

        packed = pack_padded_sequence(self.x, self.lengths, enforce_sorted=False)
        return self._lengths_call(lambda model: model(packed)[0], lambda out: out.data)

    def _lengths_call(self, forward, values):
        import rnnkit

        m = self.ours
        if self.task == "infer":
            def call():
                with rnnkit.no_grad():
                    return forward(m)
            return call
        step = rnnkit.value_and_grad(lambda model: values(forward(model)).sum())

        def call():
            m.zero_grad()
            return step(m)

        return call

    # ------------------------------------------------------------ torch

    def torch_call(self, torch):
        m = getattr(torch.nn, self.mode)(self.I, self.H, num_layers=self.layers,
                                         bidirectional=self.D == 2)
        m.load_state_dict({k: torch.from_numpy(v) for k, v in self.ours.state_dict().items()})
        x = torch.from_numpy(self.x)
        lengths = None if self.lengths is None else torch.from_numpy(self.lengths)
        pack = torch.nn.utils.rnn.pack_padded_sequence
        if self.size == "stream":
            state = [None]  # carried from call to call

            def step():
                with torch.inference_mode():
                    out, state[0] = m(x, state[0])  # x: (1, B, I), one step
                return out
            return step

        def forward():
            if lengths is None:
                return m(x)
            out, h = m(pack(x, lengths, enforce_sorted=False))
            if self.size == "lengths":  # what torch needs for a lengths= call: pad back
                out = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=self.T)[0]
            return out, h

        if self.task == "infer":
            def call():
                with torch.inference_mode():
                    return forward()
            return call

        def call():
            m.zero_grad(set_to_none=True)
            out = forward()[0]
            (out if lengths is None or self.size == "lengths" else out.data).sum().backward()

        return call

    # ------------------------------------------------------------ onnxruntime

    def ort_call(self, ort, tmpdir, torch=None):
        """onnxruntime on the cell's layer: torch's own ONNX export of the same weights when
        torch is there (its packed cells: rnnkit's export, with ``sequence_lens``, which
        torch's exporter cannot write for a PackedSequence), else rnnkit's."""
        import numpy as np

        import rnnkit.onnx

        if self.task != "infer":
            return None  # ORT runs inference only
        path = os.path.join(tmpdir, f"{self.size}-{self.mode}.onnx")
        if self.size == "stream":
            return self._ort_stream(ort, path, torch)
        if torch is not None and not self.packed:
            self._torch_export(torch, path, initial_states=False)
        else:
            rnnkit.onnx.export(self.ours, path, self.x.shape, sequence_lens=self.packed)
        session = self._session(ort, path)
        feed = {"input": self.x}
        if self.packed:
            feed["sequence_lens"] = self.lengths.astype(np.int32)
        return lambda: session.run(None, feed)

    def _torch_export(self, torch, path, initial_states):
        """torch's exporter (TorchScript) on a torch layer holding the cell's weights:
        inputs ``input`` (and ``h_0``, ``c_0``), outputs ``output``, ``h_n`` (``c_n``)."""
        import warnings

        import numpy as np

        lstm = self.mode == "LSTM"
        m = getattr(torch.nn, self.mode)(self.I, self.H, num_layers=self.layers,
                                         bidirectional=self.D == 2).eval()
        m.load_state_dict({k: torch.from_numpy(v) for k, v in self.ours.state_dict().items()})
        args = (torch.from_numpy(self.x),)
        names = ["input"]
        if initial_states:
            t0 = torch.from_numpy(np.zeros((self.layers * self.D, self.B, self.H), np.float32))
            args += ((t0, t0) if lstm else t0,)
            names += ["h_0"] + ["c_0"] * lstm
        with warnings.catch_warnings():  # the legacy exporter's deprecation and batch notes
            warnings.simplefilter("ignore")
            torch.onnx.export(m, args, path, dynamo=False, input_names=names,
                              output_names=["output", "h_n"] + ["c_n"] * lstm)

    @staticmethod
    def _session(ort, path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def _ort_stream(self, ort, path, torch):
        """onnxruntime's stateful loop: ``run`` on one step, its h_n (and c_n) fed back as
        the next h_0 (c_0). The graph is torch's own export of the same weights (its
        TorchScript exporter) when torch is there, else rnnkit's."""
        import numpy as np

        import rnnkit.onnx

        lstm = self.mode == "LSTM"
        h_0 = np.zeros((self.layers * self.D, self.B, self.H), np.float32)
        if torch is not None:
            self._torch_export(torch, path, initial_states=True)
        else:
            rnnkit.onnx.export(self.ours, path, self.x.shape, initial_states=True)
        session = self._session(ort, path)
        feed = {"input": self.x, "h_0": h_0}
        if lstm:
            feed["c_0"] = h_0.copy()

        def step():
            result = session.run(None, feed)
            feed["h_0"] = result[1]
            if lstm:
                feed["c_0"] = result[2]
            return result[0]

        return step


# ---------------------------------------------------------------- measuring


def _time_interleaved(calls, repeats, budget, block=3, settle=None, warm=None):
    """Median seconds per framework. The frameworks take turns in blocks: each block is a
    pause (``settle`` seconds, so the previous framework's idle threads stop spinning:
    OpenBLAS's, OpenMP's and onnxruntime's pools busy-wait for a while after each call
    and would steal the two cores), untimed warm-up calls for at least ``warm`` seconds
    (one at least: caches and clocks settle), then ``block`` timed calls. Turns repeat
    until each framework has ``repeats`` timings or has spent ``budget`` seconds."""
    settle = PAUSE if settle is None else settle
    warm = WARM if warm is None else warm
    times = {name: [] for name in calls}
    spent = dict.fromkeys(calls, 0.0)
    while True:
        todo = [name for name in calls
                if len(times[name]) < repeats and (spent[name] <= budget
                                                   or len(times[name]) < 3)]
        if not todo:
            break
        for name in todo:
            call = calls[name]
            time.sleep(settle)
            t_end = time.perf_counter() + warm
            call()
            while time.perf_counter() < t_end:
                call()
            for _ in range(min(block, repeats - len(times[name]))):
                t0 = time.perf_counter()
                call()
                dt = time.perf_counter() - t0
                times[name].append(dt)
                spent[name] += dt
    return {name: statistics.median(ts) for name, ts in times.items()}


def _flops(cell) -> float:
    """The matrix products of one call of ``cell``: per layer-direction, the input
    projection (2 B I G per step) and the recurrent product (2 B H G per step), over the
    steps each sequence really has; a training step adds the backward's dx, dW_ih, dh and
    dW_hh, as many again twice over."""
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[cell.mode] * cell.H
    rows = float(cell.lengths.sum()) if cell.lengths is not None else cell.T * cell.B
    total = 0.0
    for layer in range(cell.layers):
        I = cell.I if layer == 0 else cell.H * cell.D
        total += cell.D * 2.0 * rows * G * (I + cell.H)
    return total * (3 if cell.task == "train" else 1)


def _sgemm_rate(seconds: float = 1.0) -> float:
    """FLOP/s of a float32 2048^3 product on rnnkit's BLAS (2 threads): the best of the
    products that fit in ``seconds``, at least three."""
    import numpy as np

    from rnnkit._kernels.blas import matmul

    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    matmul(a, a)
    best, end, n = math.inf, time.perf_counter() + seconds, 0
    while n < 3 or time.perf_counter() < end:
        t0 = time.perf_counter()
        matmul(a, a)
        best = min(best, time.perf_counter() - t0)
        n += 1
    return 2.0 * 2048 ** 3 / best


def _gemm_seconds(cell):
    """Seconds the GEMMs alone take in an rnnkit inference: per layer-direction, the
    input projection and T per-step (B, H) x (H, G) products, on the BLAS rnnkit's
    kernels call (``rnnkit._kernels.blas``), best of three. For tiny cells the Python
    call of each GEMM dominates this figure."""
    import numpy as np

    from rnnkit._kernels.blas import matmul

    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[cell.mode] * cell.H
    rng = np.random.default_rng(0)
    total = 0.0
    for layer in range(cell.layers):
        I = cell.I if layer == 0 else cell.H * cell.D
        x = rng.standard_normal((cell.T * cell.B, I)).astype(np.float32)
        w_ih = rng.standard_normal((G, I)).astype(np.float32)
        h = rng.standard_normal((cell.B, cell.H)).astype(np.float32)
        w_hh = rng.standard_normal((G, cell.H)).astype(np.float32)
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            matmul(x, w_ih.T)
            for _ in range(cell.T):
                matmul(h, w_hh.T)
            best = min(best, time.perf_counter() - t0)
        total += cell.D * best
    return total


# ---------------------------------------------------------------- memory, compile


_MEMORY_CHILD = """
import gc, sys
from rnnkit.commands.bench import _Cell
size, mode, task, who = {args!r}
cell = _Cell(size, mode, task)
if who == 'torch':
    import torch
    torch.set_num_threads({threads})
    call = cell.torch_call(torch)
else:
    call = cell.rnnkit_call()
call()                                  # compile / warm up; keep nothing
gc.collect()

def status(key):
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key))

with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')                        # reset the peak RSS (VmHWM) to the current RSS
settled = status('VmRSS:')
for _ in range(3):
    result = call()
    del result
peak = status('VmHWM:')
print((peak - settled) / 1024, peak / 1024)
"""


def _memory(size, mode, task, who):
    """(MiB the peak RSS of 3 calls rises above the settled RSS, peak RSS MiB), in a fresh
    process (Linux: /proc/self/clear_refs resets the peak after the warm-up call)."""
    code = _MEMORY_CHILD.format(args=(size, mode, task, who), threads=THREADS)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        return None
    extra, peak = map(float, done.stdout.split())
    return extra, peak


_COMPILE_CHILD = """
import time
t0 = time.perf_counter()
import numpy as np
import rnnkit
from rnnkit import nn
t1 = time.perf_counter()
for dtype in {dtypes}:
    x = np.ones((3, 2, 4), dtype)
    for layer in (nn.LSTM(4, 5, dtype=dtype), nn.LSTM(4, 5, proj_size=3, dtype=dtype),
                  nn.GRU(4, 5, dtype=dtype), nn.RNN(4, 5, dtype=dtype),
                  nn.RNN(4, 5, nonlinearity='relu', dtype=dtype)):
        with rnnkit.no_grad():
            layer(x)
        rnnkit.grad(lambda m, x: m(x)[0].sum())(layer, x)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def _first_call(cache_dir, dtypes):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    code = _COMPILE_CHILD.format(dtypes=dtypes)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        return None
    return tuple(map(float, done.stdout.split()))


# ---------------------------------------------------------------- run


# ---------------------------------------------------------------- the cell options' table

OPTION_SETS = {  # name: (keyword arguments of the layer, modes it applies to)
    "layer_norm": ({"layer_norm": True}, MODES),
    "recurrent_dropout": ({"recurrent_dropout": 0.25}, MODES),
    "zoneout": ({"zoneout": 0.1}, MODES),
    "peepholes": ({"peepholes": True}, ("LSTM",)),
    "all": ({"layer_norm": True, "recurrent_dropout": 0.25, "zoneout": 0.1}, MODES),
}


def _torch_loop_peer():
    """``benchmarks/torch_layer_norm_lstm.py`` of a source checkout, or None (installed
    from a wheel, rnnkit has no benchmarks/ folder)."""
    import importlib.util
    from pathlib import Path

    here = Path(__file__).resolve()
    for folder in here.parents:
        path = folder / "benchmarks" / "torch_layer_norm_lstm.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location("torch_layer_norm_lstm", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    return None


def _option_calls(size, mode, task, torch, peer):
    """The calls of one (mode, task) row: plain, each option set, and for the layer-norm
    LSTM's training step the torch loop. Same weights (torch's part) and input."""
    import numpy as np

    import rnnkit

    T, B, I, H, layers, D, _ = GRID[size]
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    cls = getattr(rnnkit.nn, mode)
    calls, layers_made = {}, {}
    for name, (options, modes) in [("plain", ({}, MODES)), *OPTION_SETS.items()]:
        if mode not in modes:
            continue
        if name == "all" and mode == "LSTM":
            options = {**options, "peepholes": True}
        rnnkit.manual_seed(0)
        layer = cls(I, H, num_layers=layers, bidirectional=D == 2, **options)
        layers_made[name] = layer
        if task == "infer":
            layer.eval()

            def call(layer=layer):
                with rnnkit.no_grad():
                    return layer(x)
        else:
            step = rnnkit.value_and_grad(lambda m: m(x)[0].sum())

            def call(layer=layer, step=step):
                layer.zero_grad()
                return step(layer)
        calls[name] = call
    if task == "train" and mode == "LSTM" and torch is not None and peer is not None \
            and D == 1:
        calls["torch loop"] = peer.peer_training_step(torch, layers_made["layer_norm"], x)[1]
    return calls


def _options_table(args, modes, repeats, budget, peers):
    size = args.options_size
    if size not in GRID or GRID[size][6] or size == "stream":
        raise ValueError(f"--options-size must name an unpacked row of the grid, got {size!r}")
    peer = _torch_loop_peer() if "torch" in peers else None
    rows = []
    T, B, I, H, layers, D, _ = GRID[size]
    names = list(OPTION_SETS)
    if not args.json:
        print(f"\ncell options, {size} (T{T} B{B} I{I} H{H} L{layers}"
              f"{' D2' if D == 2 else ''}), float32: time over the plain layer's "
              f"(all = every option; LSTM: with peepholes)", flush=True)
        print(f"{'cell':<16}{'plain ms':>10}" + "".join(f"{n:>19}" for n in names)
              + f"{'torch loop/LN':>15}", flush=True)
    for mode in modes:
        for task in TASKS:
            calls = _option_calls(size, mode, task, peers.get("torch"), peer)
            med = _time_interleaved(calls, repeats, budget)
            row = {"size": size, "mode": mode, "task": task, "plain_ms": med["plain"] * 1e3}
            for name in names:
                row[f"{name}_over_plain"] = med[name] / med["plain"] if name in med else None
            row["torch_loop_ms"] = med["torch loop"] * 1e3 if "torch loop" in med else None
            row["torch_loop_over_layer_norm"] = (med["torch loop"] / med["layer_norm"]
                                                 if "torch loop" in med else None)
            rows.append(row)
            if not args.json:
                cells = "".join(_fmt(row[f"{n}_over_plain"], ">18.2f", f"{'-':>18}")
                                + ("x" if row[f"{n}_over_plain"] else " ") for n in names)
                loop = row["torch_loop_over_layer_norm"]
                print(f"{mode + ' ' + task:<16}{row['plain_ms']:>10.2f}{cells}"
                      f"{_fmt(loop, '>14.2f', f'{chr(45):>14}')}{'x' if loop else ' '}",
                      flush=True)
    if not args.json and "torch" in peers and peer is None:
        print("note: benchmarks/torch_layer_norm_lstm.py not found (not a source checkout): "
              "no torch loop column", flush=True)
    return rows


def run(args) -> int:
    import rnnkit  # noqa: F401  (imports numba's kernels lazily)

    sizes = QUICK if (args.quick and not args.sizes) else tuple(GRID)
    if args.sizes:
        sizes = tuple(s.strip() for s in args.sizes.split(","))
        for s in sizes:
            if s not in GRID:
                raise ValueError(f"--sizes must name rows of the grid ({', '.join(GRID)}), "
                                 f"got {s!r}")
    modes = tuple(m.strip().upper() for m in args.modes.split(","))
    for m in modes:
        if m not in MODES:
            raise ValueError(f"--modes must be among LSTM, GRU, RNN, got {m!r}")
    repeats = args.repeats or (5 if args.quick else 15)
    budget = args.budget if args.budget is not None else (1.0 if args.quick else 3.0)
    peers, notes = {}, []
    try:
        import torch

        torch.set_num_threads(THREADS)
        peers["torch"] = torch
    except ImportError:
        notes.append("torch is not installed: its columns say 'absent'")
    try:
        import onnxruntime as ort

        import rnnkit.onnx  # noqa: F401

        peers["ort"] = ort
    except ImportError:
        notes.append("onnxruntime (or onnx) is not installed: its columns say 'absent'")
    env_blas = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ]
    if env_blas:
        notes.append(f"{' and '.join(env_blas)} set: OpenBLAS may run at half speed")

    rows = []
    tmpdir = tempfile.mkdtemp(prefix="rnnkit-bench-")
    rate = _sgemm_rate()
    if not args.json:
        print(f"sgemm 2048^3 on rnnkit's BLAS, {THREADS} threads: {rate / 1e9:.0f} GFLOP/s",
              flush=True)
        if not args.options_only:
            print(_header(), flush=True)
    if args.options_only:
        sizes = ()
    for size in sizes:
        for mode in modes:
            for task in _tasks(size):
                cell = _Cell(size, mode, task)
                calls = {"rnnkit": cell.rnnkit_call()}
                if size == "lengths":
                    calls["rnnkit packed"] = cell.packed_call()
                if "torch" in peers:
                    calls["torch"] = cell.torch_call(peers["torch"])
                if "ort" in peers:
                    ort_call = cell.ort_call(peers["ort"], tmpdir, peers.get("torch"))
                    if ort_call is not None:
                        calls["ort"] = ort_call
                med = _time_interleaved(calls, repeats, budget)
                row = {"size": size, "mode": mode, "task": task,
                       "rnnkit_ms": med["rnnkit"] * 1e3,
                       "torch_ms": med["torch"] * 1e3 if "torch" in med else None,
                       "ort_ms": med["ort"] * 1e3 if "ort" in med else None}
                row["torch_ratio"] = (row["torch_ms"] / row["rnnkit_ms"]
                                      if row["torch_ms"] else None)
                row["ort_ratio"] = row["ort_ms"] / row["rnnkit_ms"] if row["ort_ms"] else None
                row["bound_ratio"] = med["rnnkit"] / (_flops(cell) / rate)
                if task == "infer":
                    row["gemm_share"] = min(_gemm_seconds(cell) / med["rnnkit"], 9.99)
                if size == "lengths":
                    row["packed_ms"] = med["rnnkit packed"] * 1e3
                    row["lengths_over_packed"] = med["rnnkit"] / med["rnnkit packed"]
                rows.append(row)
                if not args.json:
                    print(_format_row(row, "torch" in peers, "ort" in peers), flush=True)
                    if size == "lengths":
                        print(f"{'':<4}lengths= over the same call on packed input: "
                              f"{row['lengths_over_packed']:.2f}x (packed input "
                              f"{row['packed_ms']:.3f} ms)", flush=True)
    ratios = [r["torch_ratio"] for r in rows if r["torch_ratio"]]
    ort_ratios = [r["ort_ratio"] for r in rows if r["ort_ratio"]]
    result = {"threads": THREADS, "dtype": "float32", "repeats": repeats,
              "sgemm_gflops": rate / 1e9, "rows": rows,
              "geomean_torch_ratio": _geomean(ratios), "geomean_ort_ratio": _geomean(ort_ratios),
              "notes": notes}
    if args.options or args.options_only:
        result["options"] = _options_table(args, modes, repeats, budget, peers)
        if args.options_only:
            args.no_memory = args.no_compile = True

    if not args.no_memory:
        mem_size = "small" if args.quick else "medium"
        memory = []
        for mode in modes:
            for task in TASKS:
                entry = {"size": mem_size, "mode": mode, "task": task}
                for who in ["rnnkit"] + (["torch"] if "torch" in peers else []):
                    got = _memory(mem_size, mode, task, who)
                    entry[f"{who}_extra_mib"] = got and got[0]
                    entry[f"{who}_peak_mib"] = got and got[1]
                memory.append(entry)
        result["memory"] = memory
    if not args.no_compile:
        with tempfile.TemporaryDirectory(prefix="rnnkit-numba-") as cache:
            dtypes = "(np.float32,)" if args.quick else "(np.float32, np.float64)"
            cold = _first_call(cache, dtypes)
            warm = _first_call(cache, "(np.float32,)")
        result["compile"] = {
            "cold_all_kernels_s": cold and cold[1], "import_s": cold and cold[0],
            "first_calls_from_cache_s": warm and warm[1],
            "kernels_cold": "LSTM, LSTM proj, GRU, RNN tanh, RNN relu: forward (training "
                            "and inference), backward; " + dtypes.replace("np.", ""),
        }

    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
        return 0
    print(_footer(result))
    return 0


def _geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _header():
    return (f"{'cell':<22}{'rnnkit ms':>11}{'x bound':>9}{'torch ms':>11}{'torch/rk':>10}"
            f"{'ORT ms':>10}{'ORT/rk':>9}{'gemm%':>7}")


def _fmt(v, spec, absent):
    return f"{v:{spec}}" if v is not None else absent


def _format_row(r, have_torch, have_ort):
    name = f"{r['size']} {r['mode']} {r['task']}"
    torch_absent = "absent" if not have_torch else "-"
    ort_absent = "absent" if not have_ort else ("n/a" if r["task"] == "train" else "-")
    gemm = r.get("gemm_share")
    torch_ms = _fmt(r["torch_ms"], ">11.3f", f"{torch_absent:>11}")
    return (f"{name:<22}{r['rnnkit_ms']:>11.3f}{r['bound_ratio']:>8.2f}x{torch_ms}"
            f"{_fmt(r['torch_ratio'], '>9.2f', f'{torch_absent:>9}')}x"
            f"{_fmt(r['ort_ms'], '>10.3f', f'{ort_absent:>10}')}"
            f"{_fmt(r['ort_ratio'], '>8.2f', f'{ort_absent:>8}')}x"
            f"{_fmt(None if gemm is None else 100 * gemm, '>7.0f', f'{chr(45):>7}')}")


def _show_memory(entry, who):
    extra, peak = entry.get(f"{who}_extra_mib"), entry.get(f"{who}_peak_mib")
    if extra is None:
        return f"{who} -"
    return f"{who} +{extra:.1f} MiB (peak RSS {peak:.0f})"


def _footer(result):
    lines = [""]
    g, go = result["geomean_torch_ratio"], result["geomean_ort_ratio"]
    if result["rows"]:
        lines.append(f"geometric mean torch/rnnkit: {g:.2f}x" if g else
                     "geometric mean: no peer")
    if go:
        lines.append(f"geometric mean ORT/rnnkit (inference): {go:.2f}x")
    for entry in result.get("memory", []):
        line = f"memory {entry['size']} {entry['mode']} {entry['task']}: "
        line += _show_memory(entry, "rnnkit")
        if "torch_extra_mib" in entry:
            line += ", " + _show_memory(entry, "torch")
        lines.append(line)
    c = result.get("compile")
    if c:
        cold, warm = c["cold_all_kernels_s"], c["first_calls_from_cache_s"]
        lines.append(f"first calls, numba compiling cold: {_fmt(cold, '.2f', '?')} s "
                     f"({c['kernels_cold']}); from the cache: {_fmt(warm, '.2f', '?')} s; "
                     f"import rnnkit: {_fmt(c['import_s'], '.2f', '?')} s")
    if result["rows"]:
        lines.append("ratios above 1: rnnkit is faster. x bound: rnnkit's time over its matrix "
                     "products' FLOPs at the sgemm rate above (1.00x: at the machine's limit). "
                     "gemm%: the share of rnnkit's inference time that its GEMMs alone take "
                     "(its BLAS, same shapes)")
    if result.get("options"):
        lines.append("cell options: each option's time over the plain layer's (1.00x: free); "
                     "torch loop/LN: benchmarks/torch_layer_norm_lstm.py's training step over "
                     "rnnkit's layer-norm LSTM (above 1: rnnkit is faster)")
    lines.extend(f"note: {n}" for n in result["notes"])
    return "\n".join(lines)
