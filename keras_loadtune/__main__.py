"""`python -m keras_loadtune ...`: same as the `keras-loadtune` console script."""

from keras_loadtune.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
