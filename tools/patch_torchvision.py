"""Make the registry's torchvision importable next to the CPU build of torch.

torchvision's wheels on the package registry are CUDA builds whose C extension
cannot load on CPU-only torch. `import torchvision` then dies in
`torchvision/_meta_registrations.py`, which registers fake kernels for the
`nms` and `qnms` operators unconditionally. Its other registrations are already
guarded by `torchvision.extension._has_ops()`; this script applies the same
guard to those two, in the installed copy only. It is idempotent and does
nothing when the extension loads (for example on Colab, where torchvision
matches torch). Everything open_clip and transformers use (transforms, PIL
I/O) is pure Python and unaffected.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys

OPS = ("nms", "qnms")


def patch(path: pathlib.Path) -> bool:
    """Guard the fake-kernel registrations in `path`; return True if it changed."""
    text = path.read_text()
    new = text
    for op in OPS:
        plain = f'@torch.library.register_fake("torchvision::{op}")'
        guarded = (
            f'@(torch.library.register_fake("torchvision::{op}") '
            "if torchvision.extension._has_ops() else (lambda fn: fn))"
        )
        new = new.replace(plain + "\n", guarded + "\n")
    if new != text:
        path.write_text(new)
        return True
    return False


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision is not installed; nothing to patch")
        return 0
    target = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
    if not target.exists():
        print(f"{target} not found; this torchvision needs no patch")
        return 0
    changed = patch(target)
    print(("patched " if changed else "already guarded: ") + str(target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
