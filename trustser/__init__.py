"""trustser: measure how trustworthy a speech emotion recognition system built on a pre-trained backbone is.

Data flows one way: audio → backbone features (cached) → head → metrics → tracking → study → report.
"""

__version__ = "0.1.0"

EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry")
"""The method's four emotion classes, in label-index order."""

SAMPLE_RATE = 16_000
MAX_SECONDS = 6.0
