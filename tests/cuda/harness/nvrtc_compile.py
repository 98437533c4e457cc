"""NVRTC through ctypes: compiles CUDA source for any architecture without a GPU or driver.

(CuPy's own compile_using_nvrtc asks the driver for the architecture first, so it cannot be
used on a machine without one.) The library is the one CuPy would load: found by
cuda-pathfinder (a CuPy dependency) from the nvidia-cuda-nvrtc wheel, else from CUDA_PATH or
/usr/local/cuda.
"""

import ctypes
import glob
import os


def find_library():
    """Path of libnvrtc, or None."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        return load_nvidia_dynamic_lib("nvrtc").abs_path
    except Exception:
        pass
    for root in (os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            found = sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")))
            if found:
                return found[0]
    return None


class Nvrtc:
    def __init__(self, path):
        self.path = path
        lib = self.lib = ctypes.CDLL(path)
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        lib.nvrtcCreateProgram.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.nvrtcCompileProgram.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_char_p),
        ]
        lib.nvrtcGetProgramLogSize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
        lib.nvrtcGetProgramLog.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nvrtcGetCUBINSize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
        lib.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(ctypes.c_void_p)]

    def version(self):
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)))
        return major.value, minor.value

    def _check(self, status):
        if status != 0:
            raise RuntimeError(self.lib.nvrtcGetErrorString(status).decode())

    def compile(self, source, name, options):
        """Compile to a cubin; returns (cubin size in bytes or 0 on failure, compiler log)."""
        program = ctypes.c_void_p()
        self._check(
            self.lib.nvrtcCreateProgram(
                ctypes.byref(program), source.encode(), name.encode(), 0, None, None
            )
        )
        try:
            encoded = [o.encode() for o in options]
            status = self.lib.nvrtcCompileProgram(
                program, len(encoded), (ctypes.c_char_p * len(encoded))(*encoded)
            )
            size = ctypes.c_size_t()
            self._check(self.lib.nvrtcGetProgramLogSize(program, ctypes.byref(size)))
            log = ctypes.create_string_buffer(size.value)
            self._check(self.lib.nvrtcGetProgramLog(program, log))
            log = log.value.decode(errors="replace").strip()
            if status != 0:
                return 0, log or self.lib.nvrtcGetErrorString(status).decode()
            self._check(self.lib.nvrtcGetCUBINSize(program, ctypes.byref(size)))
            return size.value, log
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(program))
