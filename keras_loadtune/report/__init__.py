"""The tuning report: what `LoadTuner` measured, tried and kept, in text, HTML, JSON or a plot.

This module imports neither TensorFlow nor Keras (and Optuna / matplotlib only when
needed), so a report can be read back from JSON or from Optuna storage anywhere.

Example:

```python
from keras_loadtune.report import TuningReport, list_studies, load_report

print(tuner.report)                       # fixed-width table of every trial
print(tuner.report.summary_line())        # one log line
tuner.report.to_json("report.json")

rep = load_report("sqlite:///klt.db", "my-study")   # re-read a stored study
rep.plot()
```
"""

from __future__ import annotations

from keras_loadtune.report._data import DECISIONS, Decision
from keras_loadtune.report._model import REPORT_FORMAT_VERSION, TuningReport, report_from_study
from keras_loadtune.report._study import list_studies, load_report, open_storage
from keras_loadtune.storage import StorageError, StudyNotFoundError
from keras_loadtune.trial import STUDY_ATTR_REPORT, TrialRecord

__all__ = [
    "DECISIONS",
    "REPORT_FORMAT_VERSION",
    "STUDY_ATTR_REPORT",
    "Decision",
    "StorageError",
    "StudyNotFoundError",
    "TrialRecord",
    "TuningReport",
    "list_studies",
    "load_report",
    "open_storage",
    "report_from_study",
]
