#!/usr/bin/env python3
"""randread.py FILE COUNT -- COUNT random 4 KiB preads of FILE (fixed seed).

The fallback of scripts/bench.sh when fio is not installed: prints the seconds
the reads took (the interpreter's start-up excluded).
"""
import os
import random
import sys
import time

path, count = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
blocks = os.fstat(fd).st_size // 4096
rng = random.Random(1)
offsets = [rng.randrange(blocks) * 4096 for _ in range(count)]
t = time.perf_counter()
for off in offsets:
    os.pread(fd, 4096, off)
print("%.6f" % (time.perf_counter() - t))
os.close(fd)
