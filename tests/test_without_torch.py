"""rnnkit imports and runs with torch absent."""

import subprocess
import sys
import textwrap


def test_runs_with_torch_unimportable():
    script = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        import rnnkit
        from rnnkit.nn.utils.rnn import pack_padded_sequence
        lstm = rnnkit.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
        out, (h, c) = lstm(pack_padded_sequence(np.ones((5, 2, 3), np.float32), [5, 2]))
        loss, grads = rnnkit.value_and_grad(lambda m, x: (m(x)[0] ** 2).sum())(
            lstm, np.ones((5, 2, 3), np.float32))
        assert out.data.shape == (7, 8) and h.shape == (4, 2, 4)
        assert len(grads) == 16 and np.isfinite(loss)
        assert "torch" not in [m.split(".")[0] for m in sys.modules if sys.modules[m]]
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
