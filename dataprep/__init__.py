"""dataprep: turn raw videos and images into training-ready WebDataset shards on Ray."""

__version__ = "0.1.0"
