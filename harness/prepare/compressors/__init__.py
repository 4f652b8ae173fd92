"""The registered compressors (each module imported by COMPRESSORS on the first lookup of a name it registers; heavy imports stay inside each).

keras_prune, torch_prune: magnitude pruning to a target sparsity.
tflite_dynamic, tflite_float16, tflite_int8: TFLite post-training quantization.
qat: quantization-aware training, then full-int8 TFLite.
ort_int8: ONNX Runtime static QDQ int8.  ov_int8: OpenVINO NNCF post-training int8.
distill: knowledge distillation into a narrower student (Keras).
"""
