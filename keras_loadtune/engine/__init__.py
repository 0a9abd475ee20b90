"""The engine: a restartable, exactly-once prefetching enqueuer (threads or processes).

Knows nothing about Optuna and never imports TensorFlow or Keras. The data path
(`prefetcher`, `stream`, `_pool_control`, `_threads`) runs any object with
`__getitem__`; worker processes live in the `process` package, whose `_keras` module is
the only one that knows Keras (a `PyDataset` base that workers can do without, the
`KERAS_BACKEND` they import).

Example:

```python
from keras_loadtune import LoaderConfig
from keras_loadtune.engine import EndOfPass, Prefetcher

with Prefetcher(dataset, LoaderConfig(workers=4, max_queue_size=8)) as pf:
    pf.begin_pass(range(len(dataset)))
    while True:
        try:
            batch = pf.next()
        except EndOfPass:
            break
```
"""

from keras_loadtune.engine.arithmetic import held_batches, in_flight
from keras_loadtune.engine.errors import (
    BatchTimeoutError,
    DatasetNotPicklableError,
    PrefetcherClosedError,
    WorkerDiedError,
)
from keras_loadtune.engine.prefetcher import Prefetcher
from keras_loadtune.engine.process import START_METHOD, check_picklable, cold_start_estimate_s
from keras_loadtune.engine.process import prewarm as prewarm_processes
from keras_loadtune.engine.records import BatchRecord, LoaderStats, StartupRecord
from keras_loadtune.engine.sources import GeneratorFactorySource
from keras_loadtune.engine.stream import EndOfPass, Stream

__all__ = [
    "START_METHOD",
    "BatchRecord",
    "BatchTimeoutError",
    "DatasetNotPicklableError",
    "EndOfPass",
    "GeneratorFactorySource",
    "LoaderStats",
    "Prefetcher",
    "PrefetcherClosedError",
    "StartupRecord",
    "Stream",
    "WorkerDiedError",
    "check_picklable",
    "cold_start_estimate_s",
    "held_batches",
    "in_flight",
    "prewarm_processes",
]
