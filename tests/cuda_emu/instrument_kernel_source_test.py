#!/usr/bin/env python3
"""instrument_kernel_source.py: what it inserts, that it keeps every line where it was, and
that a static __shared__ declaration it cannot read stops the build instead of going unchecked."""
import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "instrument_kernel_source.py")


def instrument(source):
    """Runs the script on `source`; returns (exit code, output lines or None, stderr)."""
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "k.cu"), os.path.join(d, "k.cc")
        with open(src, "w") as f:
            f.write(source)
        r = subprocess.run([sys.executable, SCRIPT, src, out, "k.cu"], capture_output=True, text=True)
        if r.returncode != 0:
            return r.returncode, None, r.stderr
        with open(out) as f:
            return 0, f.read().split("\n"), r.stderr


KERNEL = """\
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks<T>)
    k(const int* a,
      int n) {
  __shared__ __align__(16) float a_s[kRows][kD + 1];
  __shared__ uint32_t first, external_sum;  // two at once
  extern __shared__ __align__(16) unsigned char smem_raw[];
  // __shared__ in a comment, __launch_bounds__(1) too
}
__global__ void __launch_bounds__(64) g() { __shared__ int x; }
"""


class InstrumentKernelSourceTest(unittest.TestCase):
    def test_inserts_the_checks_on_the_original_lines(self):
        code, lines, err = instrument(KERNEL)
        self.assertEqual(code, 0, err)
        self.assertEqual(lines[0], '#include "tests/cuda_emu/cuda_emu_device.h"')
        self.assertEqual(lines[1], '#line 1 "k.cu"')
        body = lines[2:]
        original = KERNEL.split("\n")
        self.assertEqual(len(body), len(original))
        self.assertEqual(body[3], "      int n) { CUDA_EMU_LAUNCH_BOUNDS(kThreads);")
        self.assertEqual(body[4], "  __shared__ __align__(16) float a_s[kRows][kD + 1]; "
                                  "CUDA_EMU_STATIC_SHARED(a_s);")
        self.assertEqual(body[5], "  __shared__ uint32_t first, external_sum; CUDA_EMU_STATIC_SHARED(first); "
                                  "CUDA_EMU_STATIC_SHARED(external_sum);  // two at once")
        self.assertEqual(body[6], original[6])  # extern: dynamic, poisoned by the launch
        self.assertEqual(body[7], original[7])  # comments are not code
        self.assertEqual(body[9], "__global__ void __launch_bounds__(64) g() { CUDA_EMU_LAUNCH_BOUNDS(64); "
                                  "__shared__ int x; CUDA_EMU_STATIC_SHARED(x); }")
        for i in (0, 1, 2, 8):
            self.assertEqual(body[i], original[i])

    def test_a_declaration_it_cannot_read_stops_the_build(self):
        code, _, err = instrument("__global__ void k() {\n  __shared__ float s\n      [64];\n}\n")
        self.assertNotEqual(code, 0)
        self.assertIn("k.cu:2: a static __shared__ declaration must end on its line", err)
        code, _, err = instrument("__global__ void k() {\n  __shared__ [64];\n}\n")
        self.assertNotEqual(code, 0)
        self.assertIn("k.cu:2: cannot read this __shared__ declaration", err)


if __name__ == "__main__":
    unittest.main()
