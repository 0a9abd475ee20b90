"""A stand-in for a user's project package (`tests/scripts/module_dataset_pool.py`)."""
