"""The model of the kernel's mm/ directory, one module per kernel concept."""
