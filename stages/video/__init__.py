"""Video stages: scene split (content cuts), clip standardization (ffmpeg) and frame sampling."""
