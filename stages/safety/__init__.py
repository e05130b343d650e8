"""Safety filters: NSFW media and unsafe caption text."""
