"""What the tuner does over a fit, with no Keras: one lifecycle for the callback and the simulator.

- `fit`: `FitLifecycle`, driven by `LoadTuner`'s Keras hooks and by
  `keras_loadtune.simulation.simulate_tuning` with the same calls;
- `fit_clock`: `FitClock`, the fit's step times and each epoch's wait;
- `step_meter`: `StepMeter`, which steps a session may see;
- `session_start`: `SessionStarter`, the probe before the session, then the study;
- `loader_switch`: `LoaderSwitch`, the driver's applier for a wrapped dataset;
- `report_build`: `build_report`, the `TuningReport` of what was measured.
"""
