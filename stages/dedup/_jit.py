"""numba's `njit`, or a clear error at first use when numba is not installed."""

from __future__ import annotations

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a declared dependency of the dedup stage
    def njit(*args, **kwargs):
        """Stand-in that fails with the fix when a compiled kernel is called."""
        def wrap(fn):
            def missing(*a, **k):
                raise ImportError("the dedup kernels need numba; fix: `pip install numba`")
            return missing
        if args and callable(args[0]):
            return wrap(args[0])
        return wrap
