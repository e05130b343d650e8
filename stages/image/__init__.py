"""Image stages: standardization (orientation, colour, size, encoding) and face crops."""
