"""numba kernels of the recurrences (``lstm.py``, ``gru.py``, ``rnn.py``): one layer,
one direction, all steps. No classes, autograd or checks; ``rnnkit._ops`` wraps them
with the signatures of ``rnnkit._reference``."""
