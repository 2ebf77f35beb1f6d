"""Export: one ONNX graph (normalisation, network, optional flip TTA, sigmoid) verified against PyTorch; int8."""

from medseg.export.onnx import ExportReport, export_onnx

__all__ = ["ExportReport", "export_onnx"]
