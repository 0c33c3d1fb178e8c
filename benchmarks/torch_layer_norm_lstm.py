"""A layer-normalized LSTM the way a torch user writes it, and rnnkit's against it.

torch has no layer-norm LSTM, so a user writes the step loop: ``nn.LayerNorm`` on both
projections and on the cell state, API.md's equations ("Cell options", ``layer_norm``):

    a   = LN(W_ih x_t) γ_ih + b_ih + LN(W_hh h_{t-1}) γ_hh + b_hh      i, f, g, o from a
    c_t = f c_{t-1} + i g,   h_t = o tanh(LN(c_t) γ_c + β_c)

``TorchLayerNormLSTM`` is that user's best version without ``torch.compile``: the input
projection and its layer norm run once over all steps (one GEMM, one LayerNorm), only the
recurrent half loops. It loads an ``rnnkit.nn.LSTM(layer_norm=True)``'s state_dict (same
names), so both run the same weights; ``main`` checks they agree, then times a training
step (forward + backward of ``output.sum()``) of each, interleaved in one process:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/torch_layer_norm_lstm.py

``rnnkit bench --options`` imports this file for its "torch loop" column.
"""

from __future__ import annotations

import argparse
import statistics
import time


def torch_layer_norm_lstm(torch, input_size, hidden_size, num_layers=1):
    """The torch module (a function, so that importing this file does not import torch)."""
    nn = torch.nn

    class TorchLayerNormLSTM(nn.Module):
        """Layers of API.md's layer-norm LSTM; parameters named as rnnkit's."""

        def __init__(self):
            super().__init__()
            H, G = hidden_size, 4 * hidden_size
            self.num_layers = num_layers
            for k in range(num_layers):
                I_k = input_size if k == 0 else H
                self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(G, I_k)))
                self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(G, H)))
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.zeros(G)))
                self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.zeros(G)))
                self.register_parameter(f"weight_ln_ih_l{k}", nn.Parameter(torch.ones(G)))
                self.register_parameter(f"weight_ln_hh_l{k}", nn.Parameter(torch.ones(G)))
                self.register_parameter(f"weight_ln_c_l{k}", nn.Parameter(torch.ones(H)))
                self.register_parameter(f"bias_ln_c_l{k}", nn.Parameter(torch.zeros(H)))

        def forward(self, x):  # x: (T, N, I) -> output (T, N, H)
            F = torch.nn.functional
            H, G = hidden_size, 4 * hidden_size
            T, N, _ = x.shape
            for k in range(self.num_layers):
                p = {name[:-len(f"_l{k}")]: value for name, value in self.named_parameters()
                     if name.endswith(f"_l{k}")}
                # the input half of every step at once: one GEMM, one LayerNorm
                u = F.layer_norm(x @ p["weight_ih"].T, (G,), p["weight_ln_ih"], None, 1e-5)
                u = u + p["bias_ih"] + p["bias_hh"]
                h = x.new_zeros(N, H)
                c = x.new_zeros(N, H)
                outputs = []
                for t in range(T):
                    a = u[t] + F.layer_norm(h @ p["weight_hh"].T, (G,), p["weight_ln_hh"],
                                            None, 1e-5)
                    i, f, g, o = a.chunk(4, dim=1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    c_hat = F.layer_norm(c, (H,), p["weight_ln_c"], p["bias_ln_c"], 1e-5)
                    h = torch.sigmoid(o) * torch.tanh(c_hat)
                    outputs.append(h)
                x = torch.stack(outputs)
            return x

    return TorchLayerNormLSTM()


def peer_training_step(torch, layer, x):
    """A callable running one training step of the torch loop on the weights of the rnnkit
    ``layer`` (``LSTM(layer_norm=True)``, unidirectional, no projection) and input ``x``."""
    model = torch_layer_norm_lstm(torch, layer.input_size, layer.hidden_size, layer.num_layers)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    xt = torch.from_numpy(x)

    def step():
        model.zero_grad(set_to_none=True)
        model(xt).sum().backward()

    return model, step


def main() -> None:
    import numpy as np
    import torch

    import rnnkit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--shape", default="100,64,256,256,2", help="T,N,I,H,layers (medium)")
    args = parser.parse_args()
    T, N, I, H, layers = map(int, args.shape.split(","))
    torch.set_num_threads(2)
    rnnkit.manual_seed(0)
    ours = rnnkit.nn.LSTM(I, H, layers, layer_norm=True)
    plain = rnnkit.nn.LSTM(I, H, layers)
    x = np.random.default_rng(0).standard_normal((T, N, I)).astype(np.float32)
    model, theirs = peer_training_step(torch, ours, x)
    # the same function: both in float64 on the first 10 steps (float32 drifts apart over
    # 100 steps of two layers, by up to 1e-2: layer norm divides by small deviations)
    x64 = x[:10].astype(np.float64)
    ours64 = rnnkit.nn.LSTM(I, H, layers, layer_norm=True, dtype=np.float64)
    ours64.load_state_dict({k: v.astype(np.float64) for k, v in ours.state_dict().items()})
    model64 = torch_layer_norm_lstm(torch, I, H, layers).double()
    model64.load_state_dict({k: torch.from_numpy(v) for k, v in ours64.state_dict().items()})
    with torch.no_grad():
        expected = model64(torch.from_numpy(x64)).numpy()
    np.testing.assert_allclose(ours64(x64)[0], expected, rtol=1e-9, atol=1e-12)

    def training_step(layer):
        step = rnnkit.value_and_grad(lambda m: m(x)[0].sum())
        return lambda: step(layer)

    calls = {"rnnkit layer_norm": training_step(ours), "rnnkit plain": training_step(plain),
             "torch loop": theirs}
    for call in calls.values():
        call()  # warm: compilation, allocators
    times = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():  # interleaved: drift hits all alike
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) * 1e3 for name, v in times.items()}
    print(f"layer-norm LSTM training step, T{T} N{N} I{I} H{H} L{layers}, float32, "
          f"2 threads, median of {args.repeats}")
    for name, ms in med.items():
        print(f"  {name:<18} {ms:9.2f} ms")
    print(f"  torch loop / rnnkit layer_norm: {med['torch loop'] / med['rnnkit layer_norm']:.2f}x"
          f"   rnnkit layer_norm / plain: {med['rnnkit layer_norm'] / med['rnnkit plain']:.2f}x")


if __name__ == "__main__":
    main()
