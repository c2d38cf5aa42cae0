#!/usr/bin/env python3
"""How the kernel's page cache holds FILE: counts its cached pages by folio kind (root only).

Maps FILE, touches every page, and looks each one up in /proc/self/pagemap and /proc/kpageflags:
order-0 pages are small folios, compound heads/tails belong to large folios. Used to show why a
second read of a mounted ISO is slower than one of the same bytes on ext4: on kernels where FUSE
has no large-folio support (6.18 and before), its page cache is all order-0 folios, so every 4 KiB
costs a folio lookup, while ext4 holds the same bytes in folios of up to 2 MiB.

usage: benches/folios.py FILE...
"""
import mmap
import os
import struct
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")
KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL = 15, 16


def folios(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    for off in range(0, size, PAGE):
        m[off]  # fault the page in (and read it, if not cached yet)
    base = next(int(line.split("-")[0], 16) for line in open("/proc/self/maps")
                if line.rstrip().endswith(" " + os.path.realpath(path)))
    counts = {"order-0": 0, "large-folio head": 0, "large-folio tail": 0}
    with open("/proc/self/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
        for i in range((size + PAGE - 1) // PAGE):
            pm.seek((base // PAGE + i) * 8)
            entry, = struct.unpack("<Q", pm.read(8))
            if not entry >> 63:
                continue
            kf.seek((entry & ((1 << 55) - 1)) * 8)
            flags, = struct.unpack("<Q", kf.read(8))
            if flags >> KPF_COMPOUND_HEAD & 1:
                counts["large-folio head"] += 1
            elif flags >> KPF_COMPOUND_TAIL & 1:
                counts["large-folio tail"] += 1
            else:
                counts["order-0"] += 1
    m.close()
    return counts


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    for path in sys.argv[1:]:
        c = folios(path)
        print(f"{path}: " + ", ".join(f"{v} {k}" for k, v in c.items()))
