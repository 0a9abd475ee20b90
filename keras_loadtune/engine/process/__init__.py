"""Worker processes: how they start, what they get, what they send back, how they die.

Everything the engine needs to run `source[index]` in other processes lives here, and
only here: the start method and the forkserver (`_start`, with `_forkserver_init` and
`_forkserver_path`, run in the forkserver only), shipping the dataset (`_shipping`:
cloudpickle, big arrays once in shared memory, a fingerprint to see changes), the loop
a worker runs (`_worker`), batches coming back (`_transfer`: shared memory or the
pipe), the pool itself (`_pool`: one duplex pipe per worker, a sender and a collector
thread), what a dead worker's error says (`_death`), and the only module of the engine
that knows Keras (`_keras`: is it a `PyDataset`, can workers do without Keras, which
`KERAS_BACKEND` they import), helped by `_code_scan` (what a dataset's code refers to).

The seam, what the rest of the engine imports: `ProcessPool` (a `WorkerPool`),
`fingerprint` (has the dataset changed), `check_picklable`, `prewarm`,
`cold_start_estimate_s` and `START_METHOD`. Nothing here imports the data path
(`prefetcher`, `stream`, `_pool_control`); it reports through `ResultSink` (`_sink`).

Example:

```python
from keras_loadtune.engine.process import ProcessPool, cold_start_estimate_s

cold_start_estimate_s(dataset)  # what a first pool is expected to cost here
# ProcessPool's own docstring shows a pool's life: resize, submit, close.
```
"""

from keras_loadtune.engine.process._pool import ProcessPool
from keras_loadtune.engine.process._shipping import check_picklable, fingerprint
from keras_loadtune.engine.process._start import START_METHOD, cold_start_estimate_s, prewarm

__all__ = [
    "START_METHOD",
    "ProcessPool",
    "check_picklable",
    "cold_start_estimate_s",
    "fingerprint",
    "prewarm",
]
