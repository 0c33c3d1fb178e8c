"""rnnkit refuses plain NumPy calls on the values it traces, and only on those: plain
autograd code in the same process behaves exactly as it does without rnnkit imported."""

import subprocess
import sys
import textwrap

# Plain autograd code, some of it calling plain NumPy on autograd's boxes (which autograd
# itself does not forbid: the results are whatever autograd gives, right or wrong).
SNIPPETS = [
    "autograd.grad(lambda x: anp.sum(anp.tanh(x) ** 2))(x)",
    "autograd.grad(lambda x: np.sum(x * x))(x)",
    "autograd.grad(lambda x: np.mean(x) * 2.0)(x)",
    "autograd.grad(lambda x: np.concatenate([x, x]).sum())(x)",
    "autograd.grad(lambda x: (np.asarray(x) * 1.0).sum())(x)",
    "autograd.grad(lambda x: np.array(x)[0])(x)",
    "autograd.grad(lambda x: np.stack([x, x])[1, 2])(x)",
    "autograd.grad(lambda x: anp.dot(x, np.ones(3)))(x)",
    "autograd.value_and_grad(lambda x: np.linalg.norm(x))(x)",
]

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import autograd, autograd.numpy as anp

    if sys.argv[1] == "with-rnnkit":
        import rnnkit
        gru = rnnkit.nn.GRU(3, 2)
        x32 = np.ones((4, 1, 3), np.float32)
        rnnkit.grad(lambda m, x: m(x)[0].sum())(gru, x32)  # rnnkit traced something
        try:
            rnnkit.grad(lambda m, x: np.sum(m(x)[0]))(gru, x32)
        except TypeError as error:
            assert "rnnkit.numpy.sum" in str(error), error
        else:
            raise AssertionError("plain numpy on rnnkit's traced value was not refused")

    x = np.array([0.5, -1.0, 2.0])
    for snippet in {snippets!r}:
        try:
            result = repr(eval(snippet))
        except Exception as error:
            result = f"{{type(error).__name__}}: {{error}}"
        print(snippet, "->", result)
""").format(snippets=SNIPPETS)


def _run(mode: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(SNIPPETS)
    return lines


def test_plain_autograd_code_is_unchanged_by_importing_and_using_rnnkit():
    assert _run("with-rnnkit") == _run("without")


def test_rnnkit_still_refuses_plain_numpy_inside_a_nested_plain_autograd_call():
    # rnnkit's refusal holds for its own trace even when a plain autograd trace of an
    # unrelated value runs in the middle of it
    script = textwrap.dedent("""
        import numpy as np, autograd, autograd.numpy as anp, rnnkit
        rnn = rnnkit.nn.RNN(2, 3, dtype=np.float64)

        def loss(m, x):
            out, _ = m(x)
            inner = autograd.grad(lambda y: np.sum(y * y))(np.ones(2))  # plain: allowed
            assert inner.tolist() == [2.0, 2.0]
            return np.sum(out)                                          # rnnkit's: refused

        try:
            rnnkit.grad(loss)(rnn, np.ones((3, 1, 2)))
        except TypeError as error:
            print("refused" if "rnnkit.numpy.sum" in str(error) else error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused"
