"""Built-in graph passes. Importing a module here registers its passes."""
from . import eliminate, fold_bn, fold_constants, fuse_gemm, simplify_shapes  # noqa: F401
