"""fedfer predict / evaluate: loading a saved model (model_io.py), image and video inference."""
