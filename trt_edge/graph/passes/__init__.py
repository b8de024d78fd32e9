"""Built-in graph passes. Importing a module here registers its passes."""
from . import (control_flow, eliminate, fold_bn, fold_constants, fuse_gemm, simplify_shapes,  # noqa: F401
               simplify_slices)

try:  # sparsify (issue 5) is opt-in; a failure to import it must never hide the other passes
    from . import sparsify  # noqa: F401
except Exception as _exc:  # noqa: BLE001
    import logging as _logging
    _logging.getLogger(__name__).warning("graph pass 'sparsify' unavailable: %s", _exc)
