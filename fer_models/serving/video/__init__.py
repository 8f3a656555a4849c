"""Emotion over video: face detection, tracking, a sliding window of crops per face, smoothing,
rendering. Plain OpenCV + NumPy; the model runs behind :class:`fer_models.serving.runtime.Predictor`."""
