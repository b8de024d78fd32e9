"""Model compression on the PyTorch side, every result exportable to ONNX and the INT8 path.

- :mod:`.pruning` / :mod:`.prune_unstructured`: magnitude pruning (layer-wise, global, gradual);
- :mod:`.sparsity24`: 2:4 pruning in TensorRT's layout and the checker the engine builder uses;
- :mod:`.prune_structured`: channel pruning that removes channels (Torch-Pruning's dependency graph);
- :mod:`.distill`: knowledge distillation (temperature KL + task loss, optional feature matching);
- :mod:`.lowrank`: SVD factorisation of Linear/Conv layers;
- :mod:`.weight_sharing`: k-means codebooks, codebook fine-tuning, bit-packed storage;
- :mod:`.qat`: quantization-aware training exported as the precision path's Q/DQ ONNX;
- :mod:`.recipe` / :mod:`.report` / :mod:`.tasks`: composed steps with a report after each.

Importing this package (or any module of it) needs no torch; torch loads on first use.
"""
