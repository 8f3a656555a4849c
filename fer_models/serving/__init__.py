"""Using a trained model outside training: export to ONNX/TorchScript with a sidecar (export.py, sidecar.py), the runtime that loads them (runtime.py), video inference (video/)."""
