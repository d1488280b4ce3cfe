"""Where a model's attention heads are (headmap) and the torch hooks that read and write
their outputs (heads). Importing this package loads neither torch nor transformers."""
