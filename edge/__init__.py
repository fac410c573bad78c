"""Reflex Edge: the device runtime (red loop, event log, bus, delegate client, admin page)."""

import os

# OpenCV reads this once, when cv2 is first imported (by whichever part comes first): without it a
# source that does not open also prints "[ WARN:0@1.2] global cap.cpp ... can't be used to capture by
# name"; the SourceError we raise already says what is wrong, in one line, naming the source.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

__version__ = "0.1.0"
