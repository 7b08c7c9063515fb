"""Large input images: time and peak memory of decoding a 12,000² PNG and JPEG to a 224² model input,
before (the full decode to float32, then the antialiased resize, as of commit ee1f046) and after
(``read_image(p, size)``: JPEG draft + box reduce on 8-bit pixels, then the same resize), side by
side in one run. Each measurement runs in a fresh subprocess, so its peak RSS (VmHWM, Linux) is
its own. Also times
the refusal of a 20,000² PNG (a decompression bomb) by the pixel limit.

    python benchmarks/large_image.py [--side 12000] [--size 224]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r'''
import json, sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
mode, path, size = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
from interpgram.backends.data.images import ImageError, read_image, resize

def before(p):  # read_image and resize as of commit ee1f046, verbatim
    from PIL import Image
    Image.MAX_IMAGE_PIXELS = None  # the 12,000² image was decoded then (with a warning)
    with Image.open(p) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    img = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    return resize(img, (size, size))

t = time.perf_counter()
err = None
try:
    out = before(path) if mode == "before" else resize(read_image(path, (size, size)), (size, size))
except ImageError as e:
    out, err = None, str(e)
dt = time.perf_counter() - t
# VmHWM: this process image's own peak RSS (ru_maxrss would carry the parent's over fork + exec)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
if out is not None:
    np.save(sys.argv[4], out.numpy())
print(json.dumps({"s": dt, "peak_mib": peak, "error": err}))
'''


def run(mode: str, path: Path, size: int, out: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(size), str(out)], capture_output=True,
                       text=True, timeout=900)
    if r.returncode:
        raise SystemExit(f"{mode} {path.name} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def make_images(d: Path, side: int) -> dict[str, Path]:
    import numpy as np
    from PIL import Image
    y, x = np.mgrid[0:side, 0:side]
    png = np.zeros((side, side, 3), np.uint8)  # thin stripes: compresses to a few hundred KB
    png[::7, :, 0] = 255
    png[:, ::13, 1] = 200
    Image.fromarray(png).save(d / "stripes.png")
    jpg = np.stack([(x * 255 // side), (y * 255 // side), ((x + y) * 127 // side)], -1).astype(np.uint8)
    jpg[side // 3: side // 2, side // 4: side // 2] = (250, 40, 40)  # a flat red block
    Image.fromarray(jpg).save(d / "gradient.jpg", quality=90)
    del png, jpg
    bomb = Image.new("1", (20000, 20000))  # 1-bit: a ~50 KB PNG claiming 400 M pixels
    bomb.save(d / "bomb.png")
    return {"png": d / "stripes.png", "jpeg": d / "gradient.jpg", "bomb": d / "bomb.png"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=12000)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    import numpy as np
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files = make_images(d, a.side)
        print(f"{a.side}² images → {a.size}² model input (each figure from a fresh process; peak = max RSS)")
        print(f"{'image':<26}{'before s':>10}{'after s':>10}{'ratio':>8}{'before MiB':>12}{'after MiB':>11}"
              f"{'ratio':>8}{'|diff| mean/max':>18}")
        for kind in ("png", "jpeg"):
            p = files[kind]
            b = run("before", p, a.size, d / "b.npy")
            f = run("after", p, a.size, d / "a.npy")
            dd = np.abs(np.load(d / "b.npy") - np.load(d / "a.npy"))
            diff = f"{dd.mean():.4f}/{dd.max():.3f}"
            label = f"{kind} ({p.stat().st_size / 1e3:,.0f} KB)"
            print(f"{label:<26}{b['s']:>10.2f}{f['s']:>10.2f}{b['s'] / f['s']:>7.1f}x{b['peak_mib']:>12,.0f}"
                  f"{f['peak_mib']:>11,.0f}{b['peak_mib'] / f['peak_mib']:>7.1f}x{diff:>14}")
        r = run("after", files["bomb"], a.size, d / "x.npy")
        print(f"20000² PNG ({files['bomb'].stat().st_size / 1e3:,.0f} KB): refused in {r['s'] * 1e3:.0f} ms, "
              f"peak {r['peak_mib']:,.0f} MiB: {r['error']}")


if __name__ == "__main__":
    main()
