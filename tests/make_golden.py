"""Write tests/golden/*.npz: inputs, torch's weights, outputs and gradients of a few
builds, so test_golden.py checks parity where torch is absent.

    python tests/make_golden.py        (needs torch==2.13.0)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).with_name("golden")

# name -> (layer kind, constructor kwargs, lengths for packing or None, with initial state)
BUILDS = {
    "lstm_bi_proj": ("LSTM", dict(input_size=5, hidden_size=7, num_layers=2,
                                  bidirectional=True, proj_size=3), None, True),
    "gru_batch_first_nobias": ("GRU", dict(input_size=5, hidden_size=7, bias=False,
                                           batch_first=True), None, False),
    "rnn_relu_packed": ("RNN", dict(input_size=5, hidden_size=7, nonlinearity="relu",
                                    bidirectional=True), [3, 6, 1, 4], True),
    "lstm_packed_batch_first": ("LSTM", dict(input_size=5, hidden_size=7, num_layers=2,
                                             batch_first=True), [2, 6, 6, 3], False),
}


def main() -> None:
    import torch

    GOLDEN.mkdir(exist_ok=True)
    for name, (kind, kw, lengths, with_hx) in BUILDS.items():
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        layer = getattr(torch.nn, kind)(**kw, dtype=torch.float64)
        N, L = (len(lengths), max(lengths)) if lengths else (3, 4)
        shape = (N, L, kw["input_size"]) if kw.get("batch_first") else (L, N, kw["input_size"])
        x = torch.tensor(rng.standard_normal(shape), requires_grad=True)
        D = 2 if kw.get("bidirectional") else 1
        rows = D * kw.get("num_layers", 1)
        h_out = kw.get("proj_size") or kw["hidden_size"]
        arrays = {"x": x.detach().numpy().copy()}
        hx = None
        if with_hx:
            h0 = torch.tensor(rng.standard_normal((rows, N, h_out)), requires_grad=True)
            arrays["h_0"] = h0.detach().numpy().copy()
            hx = h0
            if kind == "LSTM":
                c0 = torch.tensor(rng.standard_normal((rows, N, kw["hidden_size"])),
                                  requires_grad=True)
                arrays["c_0"] = c0.detach().numpy().copy()
                hx = (h0, c0)
        inp = x
        if lengths:
            arrays["lengths"] = np.array(lengths)
            inp = torch.nn.utils.rnn.pack_padded_sequence(
                x, lengths, batch_first=kw.get("batch_first", False), enforce_sorted=False)
        out, state = layer(inp, hx)
        if lengths:
            out = torch.nn.utils.rnn.pad_packed_sequence(
                out, batch_first=kw.get("batch_first", False))[0]
        h_n, c_n = state if kind == "LSTM" else (state, None)
        coeff = rng.standard_normal(tuple(out.shape))
        arrays["coeff"] = coeff
        loss = (out * torch.tensor(coeff)).sum() + (h_n**2).sum()
        if c_n is not None:
            loss = loss + c_n.sum()
        loss.backward()
        arrays.update(output=out.detach().numpy(), h_n=h_n.detach().numpy(),
                      loss=np.array(loss.item()), dx=x.grad.numpy())
        if c_n is not None:
            arrays["c_n"] = c_n.detach().numpy()
        for pname, p in layer.named_parameters():
            arrays[f"param/{pname}"] = p.detach().numpy()
            arrays[f"grad/{pname}"] = p.grad.numpy()
        np.savez_compressed(GOLDEN / f"{name}.npz", **arrays)
        print(f"wrote {GOLDEN / name}.npz")


if __name__ == "__main__":
    main()
