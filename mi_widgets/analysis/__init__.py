"""Analysis: pure tensor functions (head scores, thumbnails, ...), device-agnostic."""

from .attention import THUMBNAIL_SIZE, check_patterns, pattern_thumbnails

__all__ = ["THUMBNAIL_SIZE", "check_patterns", "pattern_thumbnails"]
